/* service.h - the producer on the bus: the orders API (svc.orders.create/get/list, queue
 * group "producer"), the fills it schedules and pushes to users.<sub>, the chat relay
 * (client.chat.> -> events.chat.<room>) and an rpc method (rpc.prices.quote). Handlers run on
 * nats.c's delivery threads and never block: a fill is scheduled on the filler's timer thread. */
#ifndef SC_PRODUCER_SERVICE_H
#define SC_PRODUCER_SERVICE_H

#include <stddef.h>

#include "bus.h"
#include "ticks.h"

#define SUBJ_ORDERS_CREATE "svc.orders.create"
#define SUBJ_ORDERS_GET "svc.orders.get"
#define SUBJ_ORDERS_LIST "svc.orders.list"
#define SUBJ_CLIENT_CHAT "client.chat.>"
#define SUBJ_RPC_QUOTE "rpc.prices.quote" /* a method clients call over the edge (rpc) */
#define SUBJ_HOOK_SUBSCRIBE "hooks.subscribe.orders.>" /* who may watch orders.<id>: its owner */
#define QUEUE_PRODUCER "producer"

typedef struct prod_cfg {
    long fill_delay_ms;
    size_t max_pending; /* fills waiting for their time; 503 beyond */
    size_t max_users;   /* users whose orders are kept (least recently active dropped) */
    size_t per_user;    /* orders kept per user, and the most svc.orders.list returns */
    size_t max_chat;    /* largest chat message relayed (bytes) */
} prod_cfg;

typedef struct prodsvc prodsvc;

/* Creates the store and the fill thread and subscribes. b and t are borrowed and must outlive
 * the service. Returns 0 and *out, or a negative code after logging why. */
int prodsvc_start(prodsvc **out, bus *b, ticker *t, const prod_cfg *cfg);
/* Unsubscribes (waiting for running handlers), stops the fill thread, frees; accepts NULL. */
void prodsvc_stop(prodsvc *s);
/* Fills waiting for their time (for the gauge). */
size_t prodsvc_pending(prodsvc *s);

#endif
