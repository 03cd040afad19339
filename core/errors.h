/* moegate — shared error codes and the error-message helper.
 *
 * Every fallible function in moegate returns int: 0 (MG_OK) or one of the
 * negative codes below. Detail goes into a caller-supplied buffer through
 * mg_err_set(), which does nothing when the buffer is NULL, so callers that
 * only care about the code pass NULL, 0. Messages start with the module name
 * ("gguf: ...") and name the field, key, tensor or offset at fault.
 */
#ifndef MOEGATE_CORE_ERRORS_H
#define MOEGATE_CORE_ERRORS_H

#include <stddef.h>

enum mg_err {
    MG_OK = 0,
    MG_EINVAL = -1,       /* bad argument from the caller */
    MG_ENOMEM = -2,       /* allocation failed */
    MG_EIO = -3,          /* open/read/mmap/write failed */
    MG_EFORMAT = -4,      /* a file or message is malformed or truncated */
    MG_EUNSUPPORTED = -5, /* well-formed but not something we can run */
    MG_ENOTFOUND = -6,    /* a named key, tensor or entry does not exist */
    MG_ERANGE = -7,       /* a value is outside the range we accept */
    MG_EBUSY = -8,        /* resource in use / capacity exhausted */
};

/* Human-readable name of an error code ("EFORMAT"); never NULL. */
const char *mg_err_name(int code);

/* Formats into err[0..errlen) (always NUL-terminated when errlen > 0).
 * Does nothing when err is NULL or errlen is 0. */
void mg_err_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
