/* err.h - the one error convention (docs/ARCHITECTURE.md, "Errors").
 *
 * A function that can fail returns an int: 0, or a non-negative length or count, on
 * success; a negative code on failure. The codes are one space: -errno for every cause the
 * system has a word for (-ENOMEM, -EINVAL, -ETIMEDOUT, -ENOTCONN, -EAGAIN, -EIO, -EPIPE,
 * -ENOBUFS, ...) and the SC_E* codes below for the causes it has not, all below -4000 so
 * that no errno collides. sc_strerror names any of them; it is the only *_strerror.
 * "Need more input" is SC_EINCOMPLETE in every parser. Where no caller needs the cause (a
 * static helper whose reason is logged where it happens, a parser that hands back a `why`
 * string), a header may say -1 instead; -1 is never compared with a code. */
#ifndef SC_ERR_H
#define SC_ERR_H

enum sc_err {
    SC_OK = 0,
    SC_E_FIRST = -4000,
    /* parsers */
    SC_EINCOMPLETE = -4001, /* not all of it yet: read more, call again */
    SC_EMALFORMED = -4002,  /* the input breaks its syntax */
    SC_ETOOLARGE = -4003,   /* the input is over a size or count limit */
    SC_EJSON = -4004,       /* not one valid JSON text (or a duplicate key, an overflow) */
    SC_ETYPE = -4005,       /* a message "type" this version does not know */
    SC_ETOPIC = -4006,      /* not a valid topic */
    SC_EDUPLICATE = -4007,  /* a name given twice where once is the rule */
    /* the bus */
    SC_ENORESPONDERS = -4010, /* nobody subscribes to the request's subject */
    /* Redis */
    SC_EREPLY = -4011, /* the server answered with an error reply (logged) */
    /* tokens */
    SC_EALG = -4020,     /* alg missing, "none", or not the key's pinned alg */
    SC_EKID = -4021,     /* kid missing or unknown */
    SC_ESIG = -4022,     /* the signature does not verify */
    SC_EEXPIRED = -4023, /* exp in the past (beyond leeway) */
    SC_ENOTYET = -4024,  /* nbf (or iat) in the future (beyond leeway) */
    SC_EISS = -4025,     /* iss missing or wrong */
    SC_EAUD = -4026,     /* aud missing or not ours */
    SC_ECLAIMS = -4027,  /* sub, exp or another required claim missing or mistyped */
    SC_EKEY = -4028,     /* key file unreadable, or a key of an unsupported kind */
    /* TLS */
    SC_ECERT = -4029, /* certificate or its key unreadable, mismatched or refused */
    SC_E_LAST = -4030,
};

/* A short, log-safe name for rc: an sc_err, a -errno, or 0 ("ok"). Static storage; never
 * includes input. */
const char *sc_strerror(int rc);

#endif
