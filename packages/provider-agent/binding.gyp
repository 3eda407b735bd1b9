{
  "targets": [
    {
      "target_name": "seek",
      "sources": ["native/seek.c"],
      "cflags": ["-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
      "defines": ["NAPI_VERSION=8"],
      "conditions": [["OS=='mac'", { "xcode_settings": { "MACOSX_DEPLOYMENT_TARGET": "10.15" } }]]
    }
  ]
}
