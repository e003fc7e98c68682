/* ws_reader.c - message assembly over ws_frame: a three-state machine (reading a header,
 * reading a payload, finished) driven by whatever bytes the caller has. */
#include "ws_reader.h"

#include "utf8.h"

#include <string.h>

enum { RD_HEADER, RD_PAYLOAD, RD_DONE };

static const uint8_t empty_payload[1];

void ws_reader_init(ws_reader *r, const ws_reader_config *cfg, uint8_t *buf, size_t cap)
{
    memset(r, 0, sizeof *r);
    r->max_message = cfg->max_message;
    r->rules.from_client = cfg->from_client;
    r->rules.rsv_allowed = cfg->deflate ? 0x40 : 0; /* RSV1: permessage-deflate */
    r->rules.max_payload = r->max_message;
    r->buf = buf;
    r->cap = buf ? cap : 0;
    r->state = RD_HEADER;
}

void ws_reader_set_max_message(ws_reader *r, size_t max_message)
{
    r->max_message = max_message;
    r->rules.max_payload = max_message;
}

void ws_reader_set_buffer(ws_reader *r, uint8_t *buf, size_t cap)
{
    r->buf = buf;
    r->cap = buf ? cap : 0;
}

size_t ws_reader_buffered(const ws_reader *r) { return r->msg_op ? r->msg_len : 0; }

bool ws_reader_in_message(const ws_reader *r) { return r->msg_op != 0; }

bool ws_reader_at_rest(const ws_reader *r)
{
    return r->state == RD_HEADER && r->hdr_have == 0 && r->msg_op == 0;
}

/* Ends the reader with a protocol error; returns consumed for the caller to pass on. */
static size_t fail(ws_reader *r, ws_event *ev, ws_frame_err err, size_t consumed)
{
    r->state = RD_DONE;
    ev->type = WS_EV_ERROR;
    ev->err = err;
    ev->code = ws_frame_err_code(err);
    return consumed;
}

static void unmask(const ws_reader *r, uint8_t *p, size_t n, uint64_t offset)
{
    if (r->fh.masked && n) ws_frame_unmask(p, n, r->fh.mask, offset);
}

/* Reads (the rest of) a frame header from in[*off..n). Returns 1 when the header is complete
 * (with *off past it), 0 when more bytes are needed (all consumed), -1 on error (*err). */
static int read_header(ws_reader *r, const uint8_t *in, size_t n, size_t *off, ws_frame_err *err)
{
    size_t avail = n - *off;
    int hl;

    if (r->hdr_have == 0) {
        hl = ws_frame_decode(in + *off, avail, &r->rules, &r->fh, err);
        if (hl == SC_EINCOMPLETE) {
            /* fewer bytes than the header's length, which is at most 14 */
            memcpy(r->hdr, in + *off, avail);
            r->hdr_have = (uint8_t)avail;
            *off = n;
            return 0;
        }
        if (hl < 0) return -1;
        *off += (size_t)hl;
        return 1;
    }
    size_t take = sizeof r->hdr - r->hdr_have;
    if (take > avail) take = avail;
    memcpy(r->hdr + r->hdr_have, in + *off, take);
    hl = ws_frame_decode(r->hdr, r->hdr_have + take, &r->rules, &r->fh, err);
    if (hl == SC_EINCOMPLETE) {
        r->hdr_have = (uint8_t)(r->hdr_have + take);
        *off = n;
        return 0;
    }
    if (hl < 0) return -1;
    *off += (size_t)hl - r->hdr_have;
    r->hdr_have = 0;
    return 1;
}

/* Checks a complete header against the connection's history and starts the frame. */
static ws_frame_err start_frame(ws_reader *r)
{
    const ws_frame_header *fh = &r->fh;

    r->frame_done = 0;
    if (fh->opcode == WS_OP_CONT) {
        if (!r->msg_op) return WS_ERR_CONT;
        if (fh->len > r->max_message - r->msg_len) return WS_ERR_MSG_SIZE;
    } else if (fh->opcode == WS_OP_TEXT || fh->opcode == WS_OP_BINARY) {
        if (r->msg_op) return WS_ERR_INTERLEAVE;
        /* the frame's own size was checked by the decoder (max_payload) */
        r->msg_op = fh->opcode;
        r->msg_deflated = (fh->rsv & 0x40) != 0; /* the decoder allowed it (negotiated) */
        r->msg_len = 0;
        r->utf8 = UTF8_ACCEPT;
    }
    return WS_ERR_NONE;
}

/* A control frame's payload is complete in r->ctrl: the event for it. */
static size_t end_control(ws_reader *r, ws_event *ev, size_t off)
{
    size_t len = (size_t)r->fh.len;
    ws_frame_err err;

    r->state = RD_HEADER;
    switch (r->fh.opcode) {
    case WS_OP_PING: ev->type = WS_EV_PING; break;
    case WS_OP_PONG: ev->type = WS_EV_PONG; break;
    default: { /* WS_OP_CLOSE */
        const uint8_t *reason;
        size_t rlen;
        if (ws_frame_close_parse(r->ctrl, len, &ev->code, &reason, &rlen, &err) < 0)
            return fail(r, ev, err, off);
        r->state = RD_DONE;
        ev->type = WS_EV_CLOSE;
        ev->data = reason ? reason : r->ctrl;
        ev->len = rlen;
        return off;
    }
    }
    ev->data = r->ctrl;
    ev->len = len;
    return off;
}

size_t ws_reader_feed(ws_reader *r, uint8_t *in, size_t n, ws_event *ev)
{
    size_t off = 0;
    ws_frame_err err;

    memset(ev, 0, sizeof *ev);
    if (r->state == RD_DONE) return n;
    for (;;) {
        if (r->state == RD_HEADER) {
            if (off == n) return off;
            int rc = read_header(r, in, n, &off, &err);
            if (rc < 0) return fail(r, ev, err, off);
            if (rc == 0) return off;
            err = start_frame(r);
            if (err != WS_ERR_NONE) return fail(r, ev, err, off);
            r->state = RD_PAYLOAD;
        }

        const ws_frame_header *fh = &r->fh;
        size_t avail = n - off;
        uint64_t left = fh->len - r->frame_done;
        size_t take = left < avail ? (size_t)left : avail;

        if (fh->opcode & 0x08) { /* control: at most 125 bytes, copied into r->ctrl */
            uint8_t *dst = r->ctrl + r->frame_done;
            if (take) {
                memcpy(dst, in + off, take);
                unmask(r, dst, take, r->frame_done);
            }
            off += take;
            r->frame_done += take;
            if (r->frame_done < fh->len) return off;
            return end_control(r, ev, off);
        }

        bool text = r->msg_op == WS_OP_TEXT;
        bool check = text && !r->msg_deflated; /* compressed text is checked once inflated */
        if (fh->fin && fh->opcode != WS_OP_CONT && r->frame_done == 0 && left <= avail) {
            /* A whole one-frame message in the input: delivered in place. */
            uint8_t *p = in + off;
            size_t len = (size_t)left;
            unmask(r, p, len, 0);
            if (check) {
                size_t ok = utf8_feed(&r->utf8, p, len);
                if (ok < len || r->utf8 != UTF8_ACCEPT) return fail(r, ev, WS_ERR_UTF8, off + ok);
            }
            off += len;
            r->msg_op = 0;
            r->state = RD_HEADER;
            ev->type = text ? WS_EV_TEXT : WS_EV_BINARY;
            ev->data = len ? p : empty_payload;
            ev->len = len;
            ev->compressed = r->msg_deflated;
            return off;
        }

        if (take) {
            if (r->cap < r->msg_len || r->cap - r->msg_len < left) {
                /* the frame's length was checked against max_message in start_frame */
                ev->type = WS_EV_NEED_BUFFER;
                ev->len = r->msg_len + (size_t)left;
                return off;
            }
            uint8_t *dst = r->buf + r->msg_len;
            memcpy(dst, in + off, take);
            unmask(r, dst, take, r->frame_done);
            if (check) {
                size_t ok = utf8_feed(&r->utf8, dst, take);
                if (ok < take) return fail(r, ev, WS_ERR_UTF8, off + ok);
            }
            off += take;
            r->msg_len += take;
            r->frame_done += take;
        }
        if (r->frame_done < fh->len) return off;

        r->state = RD_HEADER;
        if (!fh->fin) continue; /* the next fragment may be in the input already */
        if (check && r->utf8 != UTF8_ACCEPT) return fail(r, ev, WS_ERR_UTF8, off);
        ev->type = text ? WS_EV_TEXT : WS_EV_BINARY;
        ev->data = r->msg_len ? r->buf : empty_payload;
        ev->len = r->msg_len;
        ev->compressed = r->msg_deflated;
        r->msg_op = 0;
        r->msg_len = 0;
        return off;
    }
}
