/* ticks.h - price ticks: a bounded random walk per symbol (pure, for tests) and the ticker
 * thread that steps it every period and publishes events.prices.<SYMBOL>.
 *
 * The symbol table is fixed (BTC, ETH, SOL, DESIGN.md "Demo data"); a symbol's index is its
 * position in that table. Prefixes: walk_ (pure), ticks_ (symbol table), ticker_ (thread). */
#ifndef SC_PRODUCER_TICKS_H
#define SC_PRODUCER_TICKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"

enum { TICKS_NSYMBOLS = 3 };

/* Name and starting price of symbol i (0 <= i < TICKS_NSYMBOLS); static strings. */
const char *ticks_symbol(int i);
double ticks_start_price(int i);
/* Index of a symbol name (exact, case-sensitive), or -1. */
int ticks_symbol_index(const char *name);

/* One random walk. The price moves by at most WALK_MAX_STEP of itself per step, stays within
 * [start * WALK_MIN_FACTOR, start * WALK_MAX_FACTOR] (a step that would leave it is
 * reflected back inside) and is kept in cents. */
#define WALK_MAX_STEP 0.002
#define WALK_MIN_FACTOR 0.5
#define WALK_MAX_FACTOR 2.0
typedef struct walk {
    double start, price, lo, hi;
} walk;

void walk_init(walk *w, double start);
/* Steps with u, a uniform draw in [-1, 1]; returns the new price. Pure. */
double walk_step(walk *w, double u);

/* xorshift64* generator for the walk (not for secrets). *state must be non-zero. */
uint64_t ticks_rand(uint64_t *state);
/* A uniform double in [-1, 1] from the generator. */
double ticks_uniform(uint64_t *state);

/* Writes {"symbol":"BTC","price":67000.12,"ts":<unix ms>} into out; returns its length
 * (< outlen) or -1 when it does not fit. Pure. */
int ticks_format(char *out, size_t outlen, const char *symbol, double price, int64_t ts_ms);

typedef struct ticker ticker;

/* Starts the ticker thread: every period_ms it steps each symbol's walk and publishes a tick
 * for it on b (borrowed, must outlive the ticker). Returns 0 and *out, or a negative errno. */
int ticker_start(ticker **out, bus *b, long period_ms);
/* Stops and joins the thread, frees; accepts NULL. */
void ticker_stop(ticker *t);
/* Current price of symbol i; thread-safe. */
double ticker_price(ticker *t, int i);
/* Whether symbol i's ticks are published (all are, unless told otherwise: occupancy, the
 * producer's PRODUCER_TICK_WHEN_WATCHED). The walk goes on either way (fills use it).
 * Thread-safe. */
void ticker_set_watched(ticker *t, int i, bool on);

#endif
