/* iplimit.h - open connections per source address, for a cap shared by every worker.
 *
 * IPv4 addresses count one by one; IPv6 addresses by their /64 prefix (a single host
 * usually holds a whole /64, so counting addresses one by one would cap nothing). The table
 * is open addressing with linear probing and backward-shift deletion, sized for max_addrs
 * distinct sources (the edge passes EDGE_MAX_CONNECTIONS: it can never hold more), and
 * hashed with a per-process random key, so chosen addresses cannot pile up in one run of
 * slots. One mutex: taken once at accept and once at close.
 *
 * Threads: any. Prefix iplimit_. */
#ifndef EDGE_IPLIMIT_H
#define EDGE_IPLIMIT_H

#include <stdint.h>
#include <sys/socket.h>

typedef struct iplimit iplimit;

/* max_per_ip >= 1; max_addrs >= 1: the most distinct sources counted at once. 0 or -ENOMEM. */
int iplimit_create(iplimit **out, uint32_t max_per_ip, uint32_t max_addrs);
void iplimit_destroy(iplimit *l); /* NULL ok */

/* The counting key of a peer address (AF_INET or AF_INET6; IPv4-mapped IPv6 counts as the
 * IPv4 address). 0, or -1 for another family. */
int iplimit_key(const struct sockaddr *sa, uint8_t key[16]);

/* 1: counted (iplimit_release must follow at close), 0: the source is at its cap, or the
 * table is full (nothing counted either way). */
int iplimit_acquire(iplimit *l, const uint8_t key[16]);
void iplimit_release(iplimit *l, const uint8_t key[16]);
/* Connections counted for key now (tests, logs). */
uint32_t iplimit_count(iplimit *l, const uint8_t key[16]);
/* Distinct sources counted now. */
uint32_t iplimit_sources(iplimit *l);

#endif
