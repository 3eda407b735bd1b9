package main

// The project's own QueryChangedDiskAreas (vcsim has none): change ids assigned at snapshot time, block hashes
// of each disk's -flat.vmdk remembered per change id, and changed areas computed from them. See README.md.

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// The granularity of the simulated change tracking (ESXi's own depends on the disk size; 64 KiB is common).
const blockSize = 64 << 10

// diskState is what the tracker knows of one disk at one snapshot: a hash per block.
type diskState struct {
	vm        string // VM moref value
	deviceKey int32
	capacity  int64
	hashes    [][32]byte
}

type diskID struct {
	vm        string
	deviceKey int32
}

type snapshotDisk struct {
	snapshot  string
	deviceKey int32
}

type epoch struct {
	id       string // the stable part of a change id while tracking stays on
	sequence int
}

type changeTracker struct {
	pageBytes int64

	mu         sync.Mutex
	epochs     map[diskID]*epoch
	byChangeID map[string]*diskState
	bySnapshot map[snapshotDisk]*diskState
}

var zeroBlockHash = sha256.Sum256(make([]byte, blockSize))

func newChangeTracker(pageBytes int64) *changeTracker {
	if pageBytes < blockSize {
		pageBytes = blockSize
	}
	pageBytes -= pageBytes % blockSize
	return &changeTracker{
		pageBytes:  pageBytes,
		epochs:     map[diskID]*epoch{},
		byChangeID: map[string]*diskState{},
		bySnapshot: map[snapshotDisk]*diskState{},
	}
}

func newEpochID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	hex := make([]string, 16)
	for i, v := range b {
		hex[i] = fmt.Sprintf("%02x", v)
	}
	// ESXi writes change ids as "52 1b ... 8f-3c ... 6a/<sequence>".
	return strings.Join(hex[:8], " ") + "-" + strings.Join(hex[8:], " ")
}

// trackedDisk says whether a disk gets a change id: a flat (VMDK) disk that snapshots cover, not an independent one.
func trackedDisk(disk *types.VirtualDisk) (*types.VirtualDiskFlatVer2BackingInfo, bool) {
	backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	if !ok {
		return nil, false
	}
	if strings.HasPrefix(backing.DiskMode, "independent") {
		return nil, false
	}
	return backing, true
}

func diskCapacity(disk *types.VirtualDisk) int64 {
	if disk.CapacityInBytes > 0 {
		return disk.CapacityInBytes
	}
	return disk.CapacityInKB * 1024
}

// flatFile maps "[LocalDS_0] VM/disk1.vmdk" to the simulator's file of the disk's data, ".../VM/disk1-flat.vmdk".
func flatFile(fileName string) (string, error) {
	if !strings.HasPrefix(fileName, "[") {
		return "", fmt.Errorf("not a datastore path: %q", fileName)
	}
	end := strings.Index(fileName, "]")
	if end < 0 {
		return "", fmt.Errorf("not a datastore path: %q", fileName)
	}
	name := fileName[1:end]
	rel := strings.TrimSpace(fileName[end+1:])
	for _, entity := range simulator.Map.All("Datastore") {
		ds, ok := entity.(*simulator.Datastore)
		if !ok || ds.Name != name {
			continue
		}
		return path.Join(ds.Info.GetDatastoreInfo().Url, strings.TrimSuffix(rel, ".vmdk")+"-flat.vmdk"), nil
	}
	return "", fmt.Errorf("no datastore %q", name)
}

// hashDisk hashes every block of the disk's data file up to its capacity; bytes past the file's end are zeros.
func hashDisk(file string, capacity int64) ([][32]byte, error) {
	blocks := (capacity + blockSize - 1) / blockSize
	hashes := make([][32]byte, blocks)
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		for i := range hashes {
			hashes[i] = zeroBlockHash
		}
		return hashes, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, blockSize)
	for i := int64(0); i < blocks; i++ {
		n, err := io.ReadFull(f, buf)
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return nil, err
		}
		for j := n; j < blockSize; j++ {
			buf[j] = 0
		}
		if i == blocks-1 && capacity%blockSize != 0 {
			for j := capacity % blockSize; j < blockSize; j++ {
				buf[j] = 0
			}
		}
		hashes[i] = sha256.Sum256(buf)
	}
	return hashes, nil
}

// snapshotTaken runs after a CreateSnapshot_Task succeeded. When the VM tracks changes, every tracked disk gets a
// fresh change id, set on the disk's backing in the snapshot's config (where a backup reads it) and in the VM's
// config, and the disk's block hashes are remembered under that id and under the snapshot.
func (c *changeTracker) snapshotTaken(taskRef types.ManagedObjectReference) {
	task, ok := simulator.Map.Get(taskRef).(*simulator.Task)
	if !ok || task.Info.State != types.TaskInfoStateSuccess {
		return
	}
	snapshotRef, ok := task.Info.Result.(types.ManagedObjectReference)
	if !ok {
		return
	}
	snapshot, ok := simulator.Map.Get(snapshotRef).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return
	}
	vm, ok := simulator.Map.Get(snapshot.Vm).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	simulator.Map.WithLock(vm, func() {
		// The simulator's snapshot shares the VM's device objects: give the snapshot its own copies of the disks,
		// so that later changes of the VM (and later snapshots) leave this one's config as it was.
		devices := make([]types.BaseVirtualDevice, len(snapshot.Config.Hardware.Device))
		copy(devices, snapshot.Config.Hardware.Device)
		for i, device := range devices {
			disk, ok := device.(*types.VirtualDisk)
			if !ok {
				continue
			}
			copied := *disk
			if backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
				b := *backing
				copied.Backing = &b
			}
			devices[i] = &copied
		}
		snapshot.Config.Hardware.Device = devices

		tracking := vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
		if !tracking {
			return
		}
		for _, device := range vm.Config.Hardware.Device {
			disk, ok := device.(*types.VirtualDisk)
			if !ok {
				continue
			}
			backing, ok := trackedDisk(disk)
			if !ok {
				continue
			}
			file, err := flatFile(backing.FileName)
			if err != nil {
				continue
			}
			capacity := diskCapacity(disk)
			hashes, err := hashDisk(file, capacity)
			if err != nil {
				continue
			}
			id := diskID{vm: vm.Self.Value, deviceKey: disk.Key}
			e := c.epochs[id]
			if e == nil {
				e = &epoch{id: newEpochID()}
				c.epochs[id] = e
			}
			e.sequence++
			changeID := fmt.Sprintf("%s/%d", e.id, e.sequence)
			state := &diskState{vm: vm.Self.Value, deviceKey: disk.Key, capacity: capacity, hashes: hashes}
			c.byChangeID[changeID] = state
			c.bySnapshot[snapshotDisk{snapshot: snapshotRef.Value, deviceKey: disk.Key}] = state
			backing.ChangeId = changeID
			for _, d := range snapshot.Config.Hardware.Device {
				if sd, ok := d.(*types.VirtualDisk); ok && sd.Key == disk.Key {
					if sb, ok := sd.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
						sb.ChangeId = changeID
					}
				}
			}
		}
	})
}

// reconfigured runs after a ReconfigVM_Task succeeded: turning change tracking off forgets every change id of
// the VM (a real ESXi deletes the disks' -ctk.vmdk files), so they are refused afterwards.
func (c *changeTracker) reconfigured(vmRef types.ManagedObjectReference) {
	vm, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	simulator.Map.WithLock(vm, func() {
		if vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled {
			return
		}
		for id := range c.epochs {
			if id.vm == vm.Self.Value {
				delete(c.epochs, id)
			}
		}
		for changeID, state := range c.byChangeID {
			if state.vm == vm.Self.Value {
				delete(c.byChangeID, changeID)
			}
		}
		for _, device := range vm.Config.Hardware.Device {
			if disk, ok := device.(*types.VirtualDisk); ok {
				if backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
					backing.ChangeId = ""
				}
			}
		}
	})
}

func (c *changeTracker) snapshotRemoved(snapshotRef types.ManagedObjectReference) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key := range c.bySnapshot {
		if key.snapshot == snapshotRef.Value {
			delete(c.bySnapshot, key)
		}
	}
}

// query answers QueryChangedDiskAreas(_this: VM, snapshot, deviceKey, startOffset, changeId) as an ESXi host
// does: the areas of the disk at `snapshot` that changed since `changeId` ("*": every allocated area), within
// at most pageBytes from startOffset; the answer's length says how far it covered, and the caller continues at
// startOffset + length until the capacity.
func (c *changeTracker) query(w http.ResponseWriter, call *soapCall) {
	vm, ok := simulator.Map.Get(call.this).(*simulator.VirtualMachine)
	if !ok {
		writeFault(w, "The object has already been deleted or has not been completely created", managedObjectNotFoundFault(call.this))
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	simulator.Map.WithLock(vm, func() { c.queryLocked(w, call, vm) })
}

func (c *changeTracker) queryLocked(w http.ResponseWriter, call *soapCall, vm *simulator.VirtualMachine) {
	snapshotRef, ok := call.ref("snapshot")
	if !ok {
		// Without a snapshot, ESXi uses the current one (only for a powered-off VM); here: the current one.
		if vm.Snapshot == nil || vm.Snapshot.CurrentSnapshot == nil {
			writeFault(w, "A specified parameter was not correct: snapshot", invalidArgumentFault("snapshot"))
			return
		}
		snapshotRef = *vm.Snapshot.CurrentSnapshot
	}
	snapshot, ok := simulator.Map.Get(snapshotRef).(*simulator.VirtualMachineSnapshot)
	if !ok || snapshot.Vm.Value != vm.Self.Value {
		writeFault(w, "The object has already been deleted or has not been completely created", managedObjectNotFoundFault(snapshotRef))
		return
	}
	deviceKey, ok := parseInt(call.text("deviceKey"))
	if !ok {
		writeFault(w, "A specified parameter was not correct: deviceKey", invalidArgumentFault("deviceKey"))
		return
	}
	var disk *types.VirtualDisk
	for _, device := range snapshot.Config.Hardware.Device {
		if d, ok := device.(*types.VirtualDisk); ok && int64(d.Key) == deviceKey {
			disk = d
		}
	}
	if disk == nil {
		writeFault(w, "A specified parameter was not correct: deviceKey", invalidArgumentFault("deviceKey"))
		return
	}
	startOffset, ok := parseInt(call.text("startOffset"))
	changeID := call.text("changeId")
	state := c.bySnapshot[snapshotDisk{snapshot: snapshotRef.Value, deviceKey: int32(deviceKey)}]
	if state == nil {
		// The snapshot was taken while the VM did not track changes: ESXi has no change map for it.
		name := ""
		if b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
			name = b.GetVirtualDeviceFileBackingInfo().FileName
		}
		writeFault(w, "Error caused by file "+name, fileFault(name))
		return
	}
	if !ok || startOffset < 0 || startOffset >= state.capacity {
		writeFault(w, "A specified parameter was not correct: startOffset", invalidArgumentFault("startOffset"))
		return
	}
	var base *diskState
	if changeID != "*" {
		base = c.byChangeID[changeID]
		if base == nil || base.vm != state.vm || base.deviceKey != state.deviceKey {
			writeFault(w, "A specified parameter was not correct: changeId", invalidArgumentFault("changeId"))
			return
		}
	}
	end := (startOffset + c.pageBytes) / blockSize * blockSize
	if end <= startOffset {
		end = startOffset + c.pageBytes
	}
	if end > state.capacity {
		end = state.capacity
	}
	changed := func(block int64) bool {
		hash := state.hashes[block]
		if base == nil {
			return hash != zeroBlockHash
		}
		if block >= int64(len(base.hashes)) {
			return hash != zeroBlockHash
		}
		return hash != base.hashes[block]
	}
	var areas strings.Builder
	areaStart := int64(-1)
	flush := func(until int64) {
		if areaStart >= 0 {
			fmt.Fprintf(&areas, "<changedArea><start>%d</start><length>%d</length></changedArea>", areaStart, until-areaStart)
			areaStart = -1
		}
	}
	for block := startOffset / blockSize; block*blockSize < end; block++ {
		from := block * blockSize
		if from < startOffset {
			from = startOffset
		}
		if changed(block) {
			if areaStart < 0 {
				areaStart = from
			}
		} else {
			flush(from)
		}
	}
	flush(end)
	writeResponse(w, fmt.Sprintf(
		`<QueryChangedDiskAreasResponse xmlns="urn:vim25"><returnval><startOffset>%d</startOffset><length>%d</length>%s</returnval></QueryChangedDiskAreasResponse>`,
		startOffset, end-startOffset, areas.String()))
}
