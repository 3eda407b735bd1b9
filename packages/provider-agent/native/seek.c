/*
 * seek: lseek(2) for Node.js, which has none. Used by @drkit/provider-agent to find the holes of sparse disk
 * images (SEEK_DATA / SEEK_HOLE) and the size of block devices (SEEK_END, since fstat reports 0 for them).
 *
 * Exports:
 *   seek(fd, offset, whence) -> new offset; -1 when lseek fails with ENXIO (no data / hole at or after offset);
 *                               throws an Error with `code` (e.g. 'EINVAL'), `errno` and `syscall` otherwise.
 *   SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE: the platform's whence values (-1 when not defined).
 *
 * Only node_api.h is used, so one build works with every Node.js version of the same N-API level.
 */
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* SEEK_DATA / SEEK_HOLE on glibc */
#endif
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif

#include <errno.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef SEEK_DATA
#define DRKIT_SEEK_DATA -1
#else
#define DRKIT_SEEK_DATA SEEK_DATA
#endif
#ifndef SEEK_HOLE
#define DRKIT_SEEK_HOLE -1
#else
#define DRKIT_SEEK_HOLE SEEK_HOLE
#endif

/* Largest integer a JavaScript number holds exactly: 2^53 - 1. */
#define MAX_SAFE_INTEGER 9007199254740991LL

static const char *errno_code(int error) {
  switch (error) {
    case EINVAL: return "EINVAL";
    case EBADF: return "EBADF";
    case ESPIPE: return "ESPIPE";
    case EOVERFLOW: return "EOVERFLOW";
    case ENXIO: return "ENXIO";
    case EIO: return "EIO";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    default: return "ESEEK";
  }
}

/* Throws a JavaScript Error shaped like Node's own system errors: message, code, errno, syscall. */
static void throw_errno(napi_env env, int error) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s, lseek", errno_code(error), strerror(error));
  napi_value code_value, message_value, error_value, errno_value, syscall_value;
  if (napi_create_string_utf8(env, errno_code(error), NAPI_AUTO_LENGTH, &code_value) != napi_ok) return;
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &message_value) != napi_ok) return;
  if (napi_create_error(env, code_value, message_value, &error_value) != napi_ok) return;
  if (napi_create_int32(env, -error, &errno_value) == napi_ok) {
    napi_set_named_property(env, error_value, "errno", errno_value);
  }
  if (napi_create_string_utf8(env, "lseek", NAPI_AUTO_LENGTH, &syscall_value) == napi_ok) {
    napi_set_named_property(env, error_value, "syscall", syscall_value);
  }
  napi_throw(env, error_value);
}

static int get_integer(napi_env env, napi_value value, const char *name, int64_t *out) {
  napi_valuetype type;
  double number;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_number ||
      napi_get_value_double(env, value, &number) != napi_ok || number != number /* NaN */ ||
      number < -(double)MAX_SAFE_INTEGER || number > (double)MAX_SAFE_INTEGER || number != (double)(int64_t)number) {
    char message[96];
    snprintf(message, sizeof message, "seek: %s must be a safe integer", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
    return 0;
  }
  *out = (int64_t)number;
  return 1;
}

static napi_value seek(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 3) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "seek(fd, offset, whence) takes three arguments");
    return NULL;
  }
  int64_t fd, offset, whence;
  if (!get_integer(env, argv[0], "fd", &fd) || !get_integer(env, argv[1], "offset", &offset) ||
      !get_integer(env, argv[2], "whence", &whence)) {
    return NULL;
  }
  if (fd < 0 || fd > INT32_MAX || whence < 0 || whence > INT32_MAX) {
    throw_errno(env, fd < 0 || fd > INT32_MAX ? EBADF : EINVAL);
    return NULL;
  }
  off_t result = lseek((int)fd, (off_t)offset, (int)whence);
  int64_t answer;
  if (result == (off_t)-1) {
    int error = errno;
    if (error != ENXIO) {
      throw_errno(env, error);
      return NULL;
    }
    answer = -1;
  } else {
    answer = (int64_t)result;
  }
  napi_value value;
  if (napi_create_int64(env, answer, &value) != napi_ok) return NULL;
  return value;
}

static int set_constant(napi_env env, napi_value exports, const char *name, int32_t number) {
  napi_value value;
  return napi_create_int32(env, number, &value) == napi_ok &&
         napi_set_named_property(env, exports, name, value) == napi_ok;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value function;
  if (napi_create_function(env, "seek", NAPI_AUTO_LENGTH, seek, NULL, &function) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "seek", function) != napi_ok) return NULL;
  if (!set_constant(env, exports, "SEEK_SET", SEEK_SET) || !set_constant(env, exports, "SEEK_CUR", SEEK_CUR) ||
      !set_constant(env, exports, "SEEK_END", SEEK_END) ||
      !set_constant(env, exports, "SEEK_DATA", DRKIT_SEEK_DATA) ||
      !set_constant(env, exports, "SEEK_HOLE", DRKIT_SEEK_HOLE)) {
    return NULL;
  }
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
