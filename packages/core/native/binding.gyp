# The zstd addon of @drkit/core (zstd.c), built by the repository's scripts/prebuild-addon.mjs (prebuildify,
# from this folder) into the package's prebuilds/. It lives here, not at the package root, and is not
# published: pnpm and npm run `node-gyp rebuild` at every install of a package with a binding.gyp at its root
# and no install script (pnpm even in the workspace, ignoring "gypfile": false), which would compile zstd on
# each `pnpm install` and fail on machines without a compiler.
{
  "variables": {
    # zstd's C sources, from the zstd-napi devDependency (it bundles zstd 1.5.7 under deps/zstd/lib), relative
    # to this folder as gyp wants them.
    "zstd_lib": "<!(node -p \"require('path').relative('.', require('path').dirname(require.resolve('zstd-napi/package.json'))).split(require('path').sep).join('/') + '/deps/zstd/lib'\")"
  },
  "targets": [
    {
      "target_name": "zstd",
      "sources": ["zstd.c"],
      "dependencies": ["zstd_library"],
      "cflags": ["-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-fvisibility=hidden"],
      "defines": ["NAPI_VERSION=8"],
      "ldflags": ["-Wl,-z,noexecstack", "-Wl,-z,relro", "-Wl,-z,now", "-Wl,--as-needed"],
      "conditions": [
        [
          "OS=='mac'",
          { "xcode_settings": { "MACOSX_DEPLOYMENT_TARGET": "10.15", "GCC_SYMBOLS_PRIVATE_EXTERN": "YES" } }
        ]
      ]
    },
    # zstd, single-threaded (no ZSTD_MULTITHREAD), as a static library with hidden symbols: Node.js exports its
    # own zstd's symbols, and the addon must neither bind to them nor export ours.
    {
      "target_name": "zstd_library",
      "type": "static_library",
      "sources": [
        "<(zstd_lib)/common/debug.c",
        "<(zstd_lib)/common/entropy_common.c",
        "<(zstd_lib)/common/error_private.c",
        "<(zstd_lib)/common/fse_decompress.c",
        "<(zstd_lib)/common/pool.c",
        "<(zstd_lib)/common/threading.c",
        "<(zstd_lib)/common/xxhash.c",
        "<(zstd_lib)/common/zstd_common.c",
        "<(zstd_lib)/compress/fse_compress.c",
        "<(zstd_lib)/compress/hist.c",
        "<(zstd_lib)/compress/huf_compress.c",
        "<(zstd_lib)/compress/zstd_compress.c",
        "<(zstd_lib)/compress/zstd_compress_literals.c",
        "<(zstd_lib)/compress/zstd_compress_sequences.c",
        "<(zstd_lib)/compress/zstd_compress_superblock.c",
        "<(zstd_lib)/compress/zstd_double_fast.c",
        "<(zstd_lib)/compress/zstd_fast.c",
        "<(zstd_lib)/compress/zstd_lazy.c",
        "<(zstd_lib)/compress/zstd_ldm.c",
        "<(zstd_lib)/compress/zstd_opt.c",
        "<(zstd_lib)/compress/zstd_preSplit.c",
        "<(zstd_lib)/compress/zstdmt_compress.c",
        "<(zstd_lib)/decompress/huf_decompress.c",
        "<(zstd_lib)/decompress/huf_decompress_amd64.S",
        "<(zstd_lib)/decompress/zstd_ddict.c",
        "<(zstd_lib)/decompress/zstd_decompress.c",
        "<(zstd_lib)/decompress/zstd_decompress_block.c"
      ],
      "cflags": ["-O3", "-fvisibility=hidden"],
      "defines": [
        "XXH_NAMESPACE=ZSTD_",
        "ZSTDERRORLIB_VISIBLE=",
        "ZSTDLIB_VISIBLE=",
        "ZSTD_NO_TRACE"
      ],
      "direct_dependent_settings": { "include_dirs": ["<(zstd_lib)"] },
      "conditions": [
        ["OS=='mac'", { "xcode_settings": { "GCC_SYMBOLS_PRIVATE_EXTERN": "YES", "MACOSX_DEPLOYMENT_TARGET": "10.15" } }],
        ["OS=='win'", { "sources!": ["<(zstd_lib)/decompress/huf_decompress_amd64.S"] }]
      ]
    }
  ]
}
