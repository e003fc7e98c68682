/* example.c - the smallest useful Sidecast client: subscribe to topics and print their events.
 *
 *   SIDECAST_URL=ws://localhost:8090/ws SIDECAST_TOKEN="$ACCESS_TOKEN" example-c prices.BTC
 *
 * The token comes from $SIDECAST_TOKEN, or, when $SIDECAST_TOKEN_FILE is set, from that file,
 * read again whenever the library asks (at start, on token_expiring, after a close 4001), so
 * whatever renews the file renews the session. Ctrl-C stops it. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sidecast.h>

static sc_client *client;

static int get_token(void *ud, sc_client *c)
{
    (void)ud;
    char buf[8200] = "";
    const char *path = getenv("SIDECAST_TOKEN_FILE"), *tok = getenv("SIDECAST_TOKEN");
    if (path) {
        FILE *f = fopen(path, "r");
        if (!f) return -errno;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        tok = buf;
    }
    if (!tok || !*tok) return -EACCES; /* nothing to try: give up */
    return sc_client_set_token(c, tok);
}

static void on_event(void *ud, const sc_client_event *ev)
{
    (void)ud;
    printf("%s #%" PRIu64 " %.*s\n", ev->topic, ev->seq, (int)ev->data_len, ev->data);
    fflush(stdout);
}

static void on_state(void *ud, sc_client_state s, int code, const char *why)
{
    (void)ud;
    fprintf(stderr, "example: %s%s%s (%d)\n", sc_client_state_name(s), *why ? ": " : "", why, code);
}

static void on_sub(void *ud, const char *topic, sc_client_sub_status st, const char *code,
                   const char *message, uint64_t oldest)
{
    (void)ud;
    (void)message;
    static const char *names[] = {"live", "resumed", "gap", "refused"};
    fprintf(stderr, "example: %s %s %s %" PRIu64 "\n", topic, names[st], code, oldest);
}

static void on_signal(int sig)
{
    (void)sig;
    sc_client_stop(client); /* async-signal-safe: a flag and a write */
}

int main(int argc, char **argv)
{
    const char *url = getenv("SIDECAST_URL");
    if (argc < 2 || !url) {
        fprintf(stderr, "usage: SIDECAST_URL=ws://HOST:PORT/ws SIDECAST_TOKEN=... %s TOPIC...\n",
                argv[0]);
        return 2;
    }
    sc_client_config cfg = {
        .urls = &url,
        .nurls = 1,
        .cafile = getenv("SIDECAST_CACERT"),
        .token = get_token,
        .on_event = on_event,
        .on_state = on_state,
        .on_sub = on_sub,
    };
    int rc = sc_client_create(&cfg, &client);
    for (int i = 1; rc == 0 && i < argc; i++) rc = sc_client_subscribe(client, argv[i], 0);
    if (rc < 0) {
        fprintf(stderr, "example: %s\n", strerror(-rc));
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    rc = sc_client_run(client);
    sc_client_destroy(client);
    return rc < 0 ? 1 : 0;
}
