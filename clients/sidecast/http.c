/* http.c - the sidecast client's HTTP/1.1 requests to the gateway. */
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "net.h"

static const char *line_end(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    return nl;
}

int http_head_parse(const char *buf, size_t len, http_head *h)
{
    const char *p = buf, *end = buf + (len > HTTP_HEAD_MAX ? HTTP_HEAD_MAX : len);
    memset(h, 0, sizeof *h);
    const char *nl = line_end(p, end);
    if (!nl) return len >= HTTP_HEAD_MAX ? SC_ETOOLARGE : SC_EINCOMPLETE;
    /* status line: HTTP/1.x SP 3DIGIT [SP reason] */
    if (nl - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ' ||
        !isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) ||
        !isdigit((unsigned char)p[11]))
        return SC_EMALFORMED;
    h->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    p = nl + 1;
    for (;;) {
        nl = line_end(p, end);
        if (!nl) return len >= HTTP_HEAD_MAX ? SC_ETOOLARGE : SC_EINCOMPLETE;
        const char *le = nl;
        if (le > p && le[-1] == '\r') le--;
        if (le == p) return (int)(nl + 1 - buf); /* the empty line */
        if (h->nheaders == HTTP_MAX_HEADERS) return SC_ETOOLARGE;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (!colon || colon == p) return SC_EMALFORMED;
        const char *v = colon + 1, *ve = le;
        while (v < ve && (*v == ' ' || *v == '\t')) v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        h->h[h->nheaders].name = p;
        h->h[h->nheaders].name_len = (size_t)(colon - p);
        h->h[h->nheaders].value = v;
        h->h[h->nheaders].value_len = (size_t)(ve - v);
        h->nheaders++;
        p = nl + 1;
    }
}

const char *http_head_get(const http_head *h, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < h->nheaders; i++)
        if (h->h[i].name_len == n && strncasecmp(h->h[i].name, name, n) == 0) {
            *len = h->h[i].value_len;
            return h->h[i].value;
        }
    return NULL;
}

void http_response_clear(http_response *resp)
{
    if (!resp) return;
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}

int http_form_append(char *out, size_t cap, const char *name, const char *value)
{
    size_t n = strlen(out);
    const char *parts[2] = {name, value};
    if (n > 0) {
        if (n + 1 >= cap) return -1;
        out[n++] = '&';
    }
    for (int i = 0; i < 2; i++) {
        if (i == 1) {
            if (n + 1 >= cap) return -1;
            out[n++] = '=';
        }
        for (const unsigned char *c = (const unsigned char *)parts[i]; *c; c++) {
            if (isalnum(*c) || *c == '-' || *c == '.' || *c == '_' || *c == '~') {
                if (n + 1 >= cap) return -1;
                out[n++] = (char)*c;
            } else {
                if (n + 3 >= cap) return -1;
                snprintf(out + n, 4, "%%%02X", *c);
                n += 3;
            }
        }
    }
    out[n] = '\0';
    return 0;
}

void http_reader_init(http_reader *rd, int head_request)
{
    memset(rd, 0, sizeof *rd);
    rd->clen = -1;
    rd->head_request = head_request;
}

/* One chunk-size line at buf[*pos..n): hex digits, then an optional ";extension", then LF or
 * CRLF. 1 with *size and *pos past the line, 0 when the line is incomplete, -EPROTO. */
static int chunk_size_line(const char *buf, size_t n, size_t *pos, size_t *size)
{
    size_t i = *pos, v = 0, digits = 0;
    for (; i < n && isxdigit((unsigned char)buf[i]); i++, digits++) {
        if (v > (SIZE_MAX >> 4)) return -EPROTO;
        v = v * 16 + (size_t)(isdigit((unsigned char)buf[i])
                                  ? buf[i] - '0'
                                  : (tolower((unsigned char)buf[i]) - 'a' + 10));
    }
    if (i == n) return 0;
    if (!digits || (buf[i] != ';' && buf[i] != '\r' && buf[i] != '\n')) return -EPROTO;
    const char *nl = memchr(buf + i, '\n', n - i);
    if (!nl) return 0;
    *pos = (size_t)(nl - buf) + 1;
    *size = v;
    return 1;
}

/* Walks a chunked body at buf[0..n). With out != NULL, copies the payload to out (which may
 * be buf itself: the payload never overtakes the input) and sets *out_len.
 * 1 complete, 0 incomplete, -EPROTO. */
static int chunked_walk(const char *buf, size_t n, char *out, size_t *out_len)
{
    size_t pos = 0, o = 0;
    for (;;) {
        size_t sz;
        int rc = chunk_size_line(buf, n, &pos, &sz);
        if (rc <= 0) return rc;
        if (sz == 0) break;
        if (sz > n - pos) return 0;
        if (out) memmove(out + o, buf + pos, sz);
        o += sz;
        pos += sz;
        if (pos < n && buf[pos] == '\r') pos++;
        if (pos == n) return 0;
        if (buf[pos] != '\n') return -EPROTO;
        pos++;
    }
    /* trailer fields, then an empty line */
    for (;;) {
        const char *nl = memchr(buf + pos, '\n', n - pos);
        if (!nl) return 0;
        size_t ll = (size_t)(nl - (buf + pos));
        pos = (size_t)(nl - buf) + 1;
        if (ll == 0 || (ll == 1 && nl[-1] == '\r')) break;
    }
    if (out_len) *out_len = o;
    return 1;
}

int http_reader_step(http_reader *rd, const char *buf, size_t len, int eof)
{
    if (rd->hlen == 0) {
        int hl = http_head_parse(buf, len, &rd->h);
        if (hl == SC_EINCOMPLETE) return eof ? -EPROTO : SC_EINCOMPLETE;
        if (hl < 0) return hl == SC_ETOOLARGE ? -EMSGSIZE : -EPROTO;
        rd->hlen = hl;
        size_t vl;
        const char *v = http_head_get(&rd->h, "Content-Length", &vl);
        if (v) {
            long long clen = 0;
            if (vl == 0) return -EPROTO;
            for (size_t i = 0; i < vl; i++) {
                if (!isdigit((unsigned char)v[i])) return -EPROTO;
                clen = clen * 10 + (v[i] - '0');
                if (clen > HTTP_BODY_MAX) return -EMSGSIZE;
            }
            rd->clen = clen;
        }
        v = http_head_get(&rd->h, "Transfer-Encoding", &vl);
        if (v && vl >= 7 && strncasecmp(v + vl - 7, "chunked", 7) == 0) rd->chunked = 1;
        if (rd->h.status == 204 || rd->h.status == 304 || rd->head_request) {
            rd->clen = 0;
            rd->chunked = 0;
        }
    }
    size_t have = len - (size_t)rd->hlen;
    if (rd->chunked) {
        int rc = chunked_walk(buf + rd->hlen, have, NULL, NULL);
        if (rc < 0) return rc;
        if (rc == 0 && have > HTTP_BODY_MAX + 4096) return -EMSGSIZE;
        return rc == 1 ? 0 : eof ? -EPROTO : SC_EINCOMPLETE;
    }
    if (rd->clen >= 0) return have >= (size_t)rd->clen ? 0 : eof ? -EPROTO : SC_EINCOMPLETE;
    if (have > HTTP_BODY_MAX) return -EMSGSIZE;
    return eof ? 0 : SC_EINCOMPLETE; /* a body that runs to the close */
}

int http_reader_body(const http_reader *rd, char *buf, size_t len, size_t *body_len)
{
    size_t n = len - (size_t)rd->hlen;
    if (rd->chunked) {
        if (chunked_walk(buf + rd->hlen, n, buf, &n) != 1) return -EPROTO;
    } else {
        if (rd->clen >= 0) n = (size_t)rd->clen;
        memmove(buf, buf + rd->hlen, n);
    }
    buf[n] = '\0';
    *body_len = n;
    return 0;
}

int http_request(const char *base_url, const char *method, const char *path,
                 const char *content_type, const char *body, size_t body_len, const char *bearer,
                 int timeout_ms, net_tls *tls, http_response *resp)
{
    memset(resp, 0, sizeof *resp);
    net_url u;
    int rc = net_url_parse(base_url, &u);
    if (rc < 0) return rc;
    if (strcmp(u.scheme, "http") != 0 && strcmp(u.scheme, "https") != 0) return -EINVAL;
    int64_t deadline = net_now_ms() + timeout_ms;
    char *buf = NULL;
    net_conn conn;
    rc = net_conn_open(&conn, &u, tls, deadline);
    if (rc < 0) return rc;

    /* the base URL's path is a prefix (a gateway mounted under /sidecast, say) */
    size_t blen = strlen(u.path);
    if (blen > 0 && u.path[blen - 1] == '/') blen--;
    size_t head_cap = 1024 + blen + strlen(path) + (bearer ? strlen(bearer) : 0);
    char *head = malloc(head_cap);
    if (!head) {
        rc = -ENOMEM;
        goto error;
    }
    int hl = snprintf(head, head_cap,
                      "%s %.*s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sidecast-cli/1\r\n"
                      "Accept: application/json\r\nConnection: close\r\n%s%s%s"
                      "%s%s%sContent-Length: %zu\r\n\r\n",
                      method, (int)blen, u.path, path, u.hostport,
                      bearer ? "Authorization: Bearer " : "", bearer ? bearer : "",
                      bearer ? "\r\n" : "", content_type ? "Content-Type: " : "",
                      content_type ? content_type : "", content_type ? "\r\n" : "", body_len);
    rc = (hl < 0 || (size_t)hl >= head_cap) ? -EINVAL
                                            : net_conn_write(&conn, head, (size_t)hl, deadline);
    explicit_bzero(head, head_cap); /* it held the bearer token */
    free(head);
    if (rc == 0 && body_len) rc = net_conn_write(&conn, body, body_len, deadline);
    if (rc < 0) goto error;

    size_t cap = HTTP_HEAD_MAX + HTTP_BODY_MAX + 64, len = 0;
    buf = malloc(cap + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto error;
    }
    http_reader rd;
    http_reader_init(&rd, strcmp(method, "HEAD") == 0);
    for (;;) {
        if (len == cap) {
            rc = -EMSGSIZE;
            goto error;
        }
        ssize_t r = net_conn_read(&conn, buf + len, cap - len, deadline);
        if (r < 0) { /* -EINTR too: the only signals caught mean "stop" */
            rc = (int)r;
            goto error;
        }
        len += (size_t)r;
        rc = http_reader_step(&rd, buf, len, r == 0);
        if (rc == 0) break;
        if (rc != SC_EINCOMPLETE) goto error;
    }
    size_t blen2;
    if ((rc = http_reader_body(&rd, buf, len, &blen2)) < 0) goto error;
    resp->status = rd.h.status;
    resp->body = buf;
    resp->body_len = blen2;
    net_conn_close(&conn);
    return 0;

error:
    free(buf);
    net_conn_close(&conn);
    return rc;
}
