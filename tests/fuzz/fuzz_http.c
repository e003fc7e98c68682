/* fuzz_http.c - libFuzzer target for the CLI's HTTP response reader (clients/sidecast/http.c:
 * http_reader_step / http_reader_body, which http_request runs after every read).
 *
 * The first input byte seeds the read sizes (1..64 bytes, or everything at once), the second
 * says whether the request was HEAD; the rest is the server's answer, fed as it would arrive,
 * then once more with "the peer closed". The buffer is exactly as large as the input (plus
 * the NUL the body gets), so ASan sees any read past what arrived.
 * Oracles: a complete response's body fits in what arrived and respects HTTP_BODY_MAX; the
 * verdict at the end is 1 or a negative errno; the sanitizers report the rest. */
#include "../../clients/sidecast/http.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint32_t seed = data[0];
    int head = data[1] & 1;
    data += 2;
    size -= 2;
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    http_reader rd;
    http_reader_init(&rd, head);
    size_t len = 0;
    int rc = SC_EINCOMPLETE;
    while (len < size) {
        size_t step = seed == 0 ? size : 1 + (seed % 64);
        seed = seed * 1103515245u + 12345u;
        len = len + step > size ? size : len + step;
        rc = http_reader_step(&rd, buf, len, 0);
        if (rc != SC_EINCOMPLETE) break;
    }
    if (rc == SC_EINCOMPLETE) rc = http_reader_step(&rd, buf, len, 1);
    if (rc != 0 && rc != -EPROTO && rc != -EMSGSIZE) abort();
    if (rc == 0) {
        size_t bl = 0;
        if (rd.hlen <= 0 || (size_t)rd.hlen > len) abort();
        if (http_reader_body(&rd, buf, len, &bl) == 0) {
            if (bl > len - (size_t)rd.hlen || bl > HTTP_BODY_MAX + 4096 || buf[bl] != '\0') abort();
        }
    }
    free(buf);
    return 0;
}
