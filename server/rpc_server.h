/*
 * rpc_server.h - the RPC front end of infer-server: listeners on nng byte
 * streams, one receive loop per connection (rpc/rpc.h), dispatch of CALL
 * frames to the methods of inference.Inference, and one thread per
 * generation call relaying engine events as MESSAGE frames. Connections
 * are capped (rpc_server_set_max_connections) and get their two threads
 * only once their first frame is in.
 *
 * Lifecycle (driven by apps/infer_server.c):
 *   rpc_server_start        listen on every URL and accept connections
 *   (srv.draining = 1)      new calls get UNAVAILABLE, running ones go on
 *   rpc_server_wait_idle    until no call is in flight, or the time is up
 *   rpc_server_cancel_all   end what is still running (UNAVAILABLE)
 *   rpc_server_stop         close listeners and connections, wait, free
 * Thread-safety: start/stop from one thread; cancel_all and wait_idle from
 * any thread.
 */
#ifndef SERVER_RPC_SERVER_H
#define SERVER_RPC_SERVER_H

#include "rpc/rpc.h"
#include "server/server.h"

typedef struct rpc_server rpc_server;

/* Open connections at most (server.max_connections); one over it is
 * refused: STATUS RESOURCE_EXHAUSTED "too many connections (N)", closed. */
#define RPC_SERVER_DEFAULT_MAX_CONNECTIONS 1024
/* A connection with no call in flight and no frame for this long is
 * closed (server.rpc_idle_timeout_ms). */
#define RPC_SERVER_DEFAULT_IDLE_TIMEOUT_MS 300000

/* Listen on urls[0..n). conn_opts: caps and timeouts of every connection
 * (max_frame = server.max_message_bytes; first_frame_timeout_ms: a new
 * connection that has not sent a whole frame by then is closed;
 * idle_timeout_ms: 0 = RPC_SERVER_DEFAULT_IDLE_TIMEOUT_MS, <0 none, and
 * only connections without a call in flight are idle). A connection costs
 * no thread before its first frame. tls: certificates for tls+tcp:// URLs
 * (may be NULL otherwise). On failure nothing is left running and err
 * names the URL. */
int rpc_server_start(srv *s, const char *const *urls, int n, const rpc_tls_opts *tls,
                     const rpc_conn_opts *conn_opts, rpc_server **out, char *err, size_t errlen);

/* Connections open at once at most; n <= 0: the default. Takes effect
 * for the next connection accepted. */
void rpc_server_set_max_connections(rpc_server *r, int n);

/* The address a listener really bound (port 0 resolved). */
const char *rpc_server_url(const rpc_server *r, int i);

/* Wait until no RPC call is in flight; 0 when idle, -1 on timeout. */
int rpc_server_wait_idle(rpc_server *r, int timeout_ms);

/* Cancel every call in flight; each ends with STATUS UNAVAILABLE. */
void rpc_server_cancel_all(rpc_server *r);

/* Stop accepting, close every connection (queued frames get linger time),
 * wait for the call threads and free. */
void rpc_server_stop(rpc_server *r);

#endif
