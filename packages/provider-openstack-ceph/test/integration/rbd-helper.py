#!/usr/bin/python3
"""Changes RBD images behind drkit's back, through librbd (python3-rbd), for the integration tests.

Usage: /usr/bin/python3 rbd-helper.py CEPH_CONF < ops.json

ops.json is a JSON list of operations, run in order on one connection as client.admin (the conf names its
keyring). Prints a JSON list with one result per operation. Operations:
  {"op": "create", "pool", "image", "size", "features"?: ["layering", ...], "order"?: 22}  objects of 2^order bytes
  {"op": "write", "pool", "image", "offset", "data": base64}
  {"op": "fill", "pool", "image", "offset", "length", "seed"}     pseudo-random bytes from a seed
  {"op": "discard", "pool", "image", "offset", "length"}         the range reads as zeros afterwards
  {"op": "resize", "pool", "image", "size"}                      grow or shrink, to the byte
  {"op": "snap-create" | "snap-remove", "pool", "image", "snap"}
  {"op": "remove", "pool", "image"}                             removes its snapshots, then the image
  {"op": "invalidate-object-map", "pool", "image"}              disables and re-enables object-map/fast-diff
"""
import base64
import json
import random
import sys

import rados
import rbd

PIECE = 4 * 1024 * 1024


def main():
    conf = sys.argv[1]
    ops = json.load(sys.stdin)
    cluster = rados.Rados(conffile=conf, name="client.admin")
    # A discard of part of an object zeroes it (librbd skips partial discards by default).
    cluster.conf_set("rbd_skip_partial_discard", "false")
    cluster.connect(timeout=20)
    results = []
    ioctxs = {}
    try:
        for op in ops:
            pool = op["pool"]
            if pool not in ioctxs:
                ioctxs[pool] = cluster.open_ioctx(pool)
            results.append(run(ioctxs[pool], op))
    finally:
        for ioctx in ioctxs.values():
            ioctx.close()
        cluster.shutdown()
    json.dump(results, sys.stdout)


def run(ioctx, op):
    kind = op["op"]
    name = op["image"]
    if kind == "create":
        features = op.get("features")
        order = op.get("order")
        if features is None:
            rbd.RBD().create(ioctx, name, op["size"], order=order, old_format=False)
        else:
            bits = 0
            for feature in features:
                bits |= getattr(rbd, "RBD_FEATURE_" + feature.upper().replace("-", "_"))
            rbd.RBD().create(ioctx, name, op["size"], order=order, old_format=False, features=bits)
        return {"ok": True}
    if kind == "remove":
        with rbd.Image(ioctx, name) as image:
            for snap in list(image.list_snaps()):
                if image.is_protected_snap(snap["name"]):
                    image.unprotect_snap(snap["name"])
                image.remove_snap(snap["name"])
        rbd.RBD().remove(ioctx, name)
        return {"ok": True}
    with rbd.Image(ioctx, name) as image:
        if kind == "write":
            data = base64.b64decode(op["data"])
            written = image.write(data, op["offset"])
            if written != len(data):
                raise RuntimeError("short write: %d of %d" % (written, len(data)))
        elif kind == "fill":
            generator = random.Random(op["seed"])
            done = 0
            while done < op["length"]:
                take = min(PIECE, op["length"] - done)
                image.write(generator.randbytes(take), op["offset"] + done)
                done += take
        elif kind == "discard":
            image.discard(op["offset"], op["length"])
        elif kind == "resize":
            image.resize(op["size"], allow_shrink=True)
        elif kind == "snap-create":
            image.create_snap(op["snap"])
        elif kind == "snap-remove":
            image.remove_snap(op["snap"])
        elif kind == "invalidate-object-map":
            both = rbd.RBD_FEATURE_FAST_DIFF | rbd.RBD_FEATURE_OBJECT_MAP
            image.update_features(both, False)
            image.update_features(both, True)
        else:
            raise ValueError("unknown op " + kind)
        return {"ok": True, "size": image.size()}


if __name__ == "__main__":
    main()
