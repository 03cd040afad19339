/* moegate — error names and the error-message helper (see errors.h). */
#include "errors.h"

#include <stdarg.h>
#include <stdio.h>

const char *mg_err_name(int code)
{
    switch (code) {
    case MG_OK: return "OK";
    case MG_EINVAL: return "EINVAL";
    case MG_ENOMEM: return "ENOMEM";
    case MG_EIO: return "EIO";
    case MG_EFORMAT: return "EFORMAT";
    case MG_EUNSUPPORTED: return "EUNSUPPORTED";
    case MG_ENOTFOUND: return "ENOTFOUND";
    case MG_ERANGE: return "ERANGE";
    case MG_EBUSY: return "EBUSY";
    default: return "EUNKNOWN";
    }
}

void mg_err_set(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}
