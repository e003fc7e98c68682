/* err.c - names of the error codes; see err.h. */
#include "err.h"

#include <errno.h>
#include <string.h>

const char *sc_strerror(int rc)
{
    switch (rc) {
    case SC_OK: return "ok";
    case SC_EINCOMPLETE: return "incomplete";
    case SC_EMALFORMED: return "malformed";
    case SC_ETOOLARGE: return "too large";
    case SC_EJSON: return "invalid JSON";
    case SC_ETYPE: return "unknown type";
    case SC_ETOPIC: return "invalid topic";
    case SC_EDUPLICATE: return "duplicate";
    case SC_ENORESPONDERS: return "no responders";
    case SC_EREPLY: return "error reply";
    case SC_EALG: return "algorithm not allowed";
    case SC_EKID: return "unknown key id";
    case SC_ESIG: return "bad signature";
    case SC_EEXPIRED: return "expired";
    case SC_ENOTYET: return "not yet valid";
    case SC_EISS: return "wrong issuer";
    case SC_EAUD: return "wrong audience";
    case SC_ECLAIMS: return "missing or invalid claims";
    case SC_EKEY: return "unusable key";
    case SC_ECERT: return "unusable certificate";
    default: break;
    }
    /* the errno values callers see most, in short stable words */
    switch (-rc) {
    case ENOMEM: return "out of memory";
    case EINVAL: return "invalid argument";
    case ETIMEDOUT: return "timeout";
    case ENOTCONN: return "not connected";
    case EAGAIN: return "busy, try again";
    case EIO: return "I/O error";
    case EPIPE: return "closed";
    case ENOBUFS: return "over its bound";
    default: break;
    }
    const char *d = rc < 0 && rc > SC_E_FIRST ? strerrordesc_np(-rc) : NULL; /* thread-safe */
    return d ? d : "unknown error";
}
