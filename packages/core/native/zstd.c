/*
 * zstd: the zstd codec of @drkit/core's chunk worker, compressing into and decompressing into buffers the caller
 * owns, so that a chunk costs no allocation (and no garbage) beyond zstd's own reused contexts.
 *
 * Exports:
 *   compressInto(out, input, level) -> bytes written at the start of `out`: one zstd frame that declares its
 *       content size. Throws a RangeError with code 'ERR_ZSTD_DST_SIZE_TOO_SMALL' when the frame does not fit in
 *       `out` (`compressBound(input.length)` bytes always suffice).
 *   decompressInto(out, input) -> bytes written (always out.length): `input` must be exactly one frame whose
 *       declared content size is out.length. Throws an Error with code 'ERR_ZSTD_CONTENT_SIZE_MISMATCH' when the
 *       frame declares no size or another one, and with code 'ERR_ZSTD' (message: zstd's error name) when zstd
 *       fails (corrupt frame, trailing bytes, ...).
 *   compressBound(size) -> zstd's worst-case frame size of `size` input bytes.
 *   version: the zstd library version ("1.5.7").
 * `out` and `input` are Uint8Arrays (Buffers are) that do not overlap. Arguments of the wrong type throw a
 * TypeError with code 'ERR_INVALID_ARG_TYPE'; levels outside zstd's range a RangeError 'ERR_OUT_OF_RANGE'.
 *
 * Each Node.js environment (the main thread, every worker thread) that loads the addon gets its own compression
 * and decompression contexts (napi instance data), created with the environment and freed when it exits; a
 * context is only ever used by the thread of its environment.
 *
 * Only node_api.h is used, so one build works with every Node.js version of the same N-API level. zstd is linked
 * in statically with hidden symbols: Node.js exports its own zstd's symbols, and ours must not bind to them.
 */
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif

#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <zstd.h>
#include <zstd_errors.h>

/* Largest integer a JavaScript number holds exactly: 2^53 - 1. */
#define MAX_SAFE_INTEGER 9007199254740991.0

typedef struct {
  ZSTD_CCtx *cctx;
  ZSTD_DCtx *dctx;
} codec_contexts;

typedef struct {
  uint8_t *data;
  size_t length;
} byte_view;

/* A byte zstd may be pointed at for an empty buffer, whose data pointer napi may give as NULL. */
static uint8_t empty_byte;

/* Throws an Error (a RangeError when `range`) with a `code`. */
static void throw_coded(napi_env env, int range, const char *code, const char *message) {
  napi_value code_value, message_value, error_value;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value) != napi_ok) return;
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &message_value) != napi_ok) return;
  napi_status status = range ? napi_create_range_error(env, code_value, message_value, &error_value)
                             : napi_create_error(env, code_value, message_value, &error_value);
  if (status == napi_ok) napi_throw(env, error_value);
}

/* Throws the Error for a zstd failure: code 'ERR_ZSTD', zstd's error name in the message and as `zstdError`. */
static void throw_zstd(napi_env env, const char *function, size_t result) {
  char message[192];
  const char *name = ZSTD_getErrorName(result);
  snprintf(message, sizeof message, "%s: zstd failed: %s", function, name);
  napi_value code_value, message_value, error_value, name_value;
  if (napi_create_string_utf8(env, "ERR_ZSTD", NAPI_AUTO_LENGTH, &code_value) != napi_ok) return;
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &message_value) != napi_ok) return;
  if (napi_create_error(env, code_value, message_value, &error_value) != napi_ok) return;
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &name_value) == napi_ok) {
    napi_set_named_property(env, error_value, "zstdError", name_value);
  }
  napi_throw(env, error_value);
}

static int get_bytes(napi_env env, napi_value value, const char *function, const char *name, byte_view *view) {
  bool is_typed_array = false;
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  if (napi_is_typedarray(env, value, &is_typed_array) != napi_ok || !is_typed_array ||
      napi_get_typedarray_info(env, value, &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    char message[128];
    snprintf(message, sizeof message, "%s: %s must be a Uint8Array", function, name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
    return 0;
  }
  view->data = data != NULL ? (uint8_t *)data : &empty_byte;
  view->length = data != NULL ? length : 0;
  return 1;
}

static int get_integer(napi_env env, napi_value value, const char *function, const char *name, double *out) {
  napi_valuetype type;
  double number;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_number ||
      napi_get_value_double(env, value, &number) != napi_ok || number != number /* NaN */ ||
      number < -MAX_SAFE_INTEGER || number > MAX_SAFE_INTEGER || number != (double)(int64_t)number) {
    char message[128];
    snprintf(message, sizeof message, "%s: %s must be a safe integer", function, name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
    return 0;
  }
  *out = number;
  return 1;
}

static int overlap(const byte_view *a, const byte_view *b) {
  if (a->length == 0 || b->length == 0) return 0;
  uintptr_t a_start = (uintptr_t)a->data, b_start = (uintptr_t)b->data;
  return a_start < b_start + b->length && b_start < a_start + a->length;
}

static napi_value size_value(napi_env env, size_t size) {
  napi_value value;
  if (napi_create_double(env, (double)size, &value) != napi_ok) return NULL;
  return value;
}

/* The two buffers of compressInto / decompressInto, checked; returns the contexts, or NULL with an exception. */
static codec_contexts *get_buffers(napi_env env, napi_callback_info info, const char *function, size_t wanted,
                                   napi_value *argv, byte_view *out, byte_view *input) {
  size_t argc = wanted;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, &data) != napi_ok) return NULL;
  if (argc < wanted) {
    char message[128];
    snprintf(message, sizeof message, "%s takes %zu arguments", function, wanted);
    napi_throw_type_error(env, "ERR_MISSING_ARGS", message);
    return NULL;
  }
  if (!get_bytes(env, argv[0], function, "out", out) || !get_bytes(env, argv[1], function, "input", input)) {
    return NULL;
  }
  if (overlap(out, input)) {
    char message[128];
    snprintf(message, sizeof message, "%s: out and input must not overlap", function);
    throw_coded(env, 1, "ERR_INVALID_ARG_VALUE", message);
    return NULL;
  }
  return (codec_contexts *)data;
}

static napi_value compress_into(napi_env env, napi_callback_info info) {
  static const char function[] = "compressInto";
  napi_value argv[3];
  byte_view out, input;
  codec_contexts *contexts = get_buffers(env, info, function, 3, argv, &out, &input);
  if (contexts == NULL) return NULL;
  double level;
  if (!get_integer(env, argv[2], function, "level", &level)) return NULL;
  if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
    char message[128];
    snprintf(message, sizeof message, "%s: level must be from %d to %d, got %.0f", function, ZSTD_minCLevel(),
             ZSTD_maxCLevel(), level);
    throw_coded(env, 1, "ERR_OUT_OF_RANGE", message);
    return NULL;
  }
  /* The context keeps its parameters across calls; ZSTD_compress2 resets only the session. */
  size_t result = ZSTD_CCtx_setParameter(contexts->cctx, ZSTD_c_compressionLevel, (int)level);
  if (ZSTD_isError(result)) {
    throw_zstd(env, function, result);
    return NULL;
  }
  result = ZSTD_compress2(contexts->cctx, out.data, out.length, input.data, input.length);
  if (ZSTD_isError(result)) {
    if (ZSTD_getErrorCode(result) == ZSTD_error_dstSize_tooSmall) {
      char message[192];
      snprintf(message, sizeof message,
               "%s: the output buffer of %zu bytes is too small for the frame of %zu input bytes "
               "(compressBound: %zu)",
               function, out.length, input.length, ZSTD_compressBound(input.length));
      throw_coded(env, 1, "ERR_ZSTD_DST_SIZE_TOO_SMALL", message);
    } else {
      throw_zstd(env, function, result);
    }
    return NULL;
  }
  return size_value(env, result);
}

static napi_value decompress_into(napi_env env, napi_callback_info info) {
  static const char function[] = "decompressInto";
  napi_value argv[2];
  byte_view out, input;
  codec_contexts *contexts = get_buffers(env, info, function, 2, argv, &out, &input);
  if (contexts == NULL) return NULL;
  unsigned long long declared = ZSTD_getFrameContentSize(input.data, input.length);
  if (declared == ZSTD_CONTENTSIZE_ERROR) {
    /* Not a frame header zstd accepts: let it say why. */
    size_t result = ZSTD_decompressDCtx(contexts->dctx, out.data, out.length, input.data, input.length);
    throw_zstd(env, function, ZSTD_isError(result) ? result : (size_t)-ZSTD_error_prefix_unknown);
    return NULL;
  }
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN || declared != (unsigned long long)out.length) {
    char message[192];
    if (declared == ZSTD_CONTENTSIZE_UNKNOWN) {
      snprintf(message, sizeof message, "%s: the frame does not declare its content size (expected %zu bytes)",
               function, out.length);
    } else {
      snprintf(message, sizeof message, "%s: the frame declares %llu bytes, the output buffer has %zu", function,
               declared, out.length);
    }
    throw_coded(env, 0, "ERR_ZSTD_CONTENT_SIZE_MISMATCH", message);
    return NULL;
  }
  /* Trailing bytes after the frame are an error too: zstd takes them for a second frame and fails on it. */
  size_t result = ZSTD_decompressDCtx(contexts->dctx, out.data, out.length, input.data, input.length);
  if (ZSTD_isError(result)) {
    throw_zstd(env, function, result);
    return NULL;
  }
  if (result != out.length) {
    char message[192];
    snprintf(message, sizeof message, "%s: the frame decoded to %zu bytes, it declares %zu", function, result,
             out.length);
    throw_coded(env, 0, "ERR_ZSTD_CONTENT_SIZE_MISMATCH", message);
    return NULL;
  }
  return size_value(env, result);
}

static napi_value compress_bound(napi_env env, napi_callback_info info) {
  static const char function[] = "compressBound";
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "compressBound takes 1 argument");
    return NULL;
  }
  double size;
  if (!get_integer(env, argv[0], function, "size", &size)) return NULL;
  /* ZSTD_compressBound returns an error code for sizes past zstd's largest input (ZSTD_MAX_INPUT_SIZE). */
  size_t bound = size >= 0 && size <= (double)SIZE_MAX ? ZSTD_compressBound((size_t)size) : 0;
  if (bound == 0 || ZSTD_isError(bound)) {
    char message[128];
    snprintf(message, sizeof message, "%s: size must be from 0 to zstd's largest input, got %.0f", function, size);
    throw_coded(env, 1, "ERR_OUT_OF_RANGE", message);
    return NULL;
  }
  return size_value(env, bound);
}

static void free_contexts(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  codec_contexts *contexts = (codec_contexts *)data;
  ZSTD_freeCCtx(contexts->cctx);
  ZSTD_freeDCtx(contexts->dctx);
  free(contexts);
}

/* The environment's contexts, created on first load there. */
static codec_contexts *environment_contexts(napi_env env) {
  void *existing = NULL;
  if (napi_get_instance_data(env, &existing) == napi_ok && existing != NULL) return (codec_contexts *)existing;
  codec_contexts *contexts = (codec_contexts *)calloc(1, sizeof *contexts);
  if (contexts != NULL) {
    contexts->cctx = ZSTD_createCCtx();
    contexts->dctx = ZSTD_createDCtx();
  }
  if (contexts == NULL || contexts->cctx == NULL || contexts->dctx == NULL ||
      ZSTD_isError(ZSTD_CCtx_setParameter(contexts->cctx, ZSTD_c_contentSizeFlag, 1)) ||
      ZSTD_isError(ZSTD_CCtx_setParameter(contexts->cctx, ZSTD_c_checksumFlag, 0))) {
    if (contexts != NULL) free_contexts(env, contexts, NULL);
    napi_throw_error(env, "ERR_ZSTD", "zstd: could not create the compression contexts (out of memory)");
    return NULL;
  }
  if (napi_set_instance_data(env, contexts, free_contexts, NULL) != napi_ok) {
    free_contexts(env, contexts, NULL);
    return NULL;
  }
  return contexts;
}

static int set_function(napi_env env, napi_value exports, const char *name, napi_callback callback, void *data) {
  napi_value function;
  return napi_create_function(env, name, NAPI_AUTO_LENGTH, callback, data, &function) == napi_ok &&
         napi_set_named_property(env, exports, name, function) == napi_ok;
}

static napi_value init(napi_env env, napi_value exports) {
  codec_contexts *contexts = environment_contexts(env);
  if (contexts == NULL) return NULL;
  napi_value version;
  if (!set_function(env, exports, "compressInto", compress_into, contexts) ||
      !set_function(env, exports, "decompressInto", decompress_into, contexts) ||
      !set_function(env, exports, "compressBound", compress_bound, NULL) ||
      napi_create_string_utf8(env, ZSTD_versionString(), NAPI_AUTO_LENGTH, &version) != napi_ok ||
      napi_set_named_property(env, exports, "version", version) != napi_ok) {
    return NULL;
  }
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
