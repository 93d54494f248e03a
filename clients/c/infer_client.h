/*
 * infer_client.h - C client of infer-server (libinfer_client).
 *
 * One infer_client talks to one or more servers (endpoints: tcp://,
 * ipc://, tls+tcp:// as nng supports them), one connection each, carrying
 * any number of concurrent calls, multiplexed by call id as
 * proto/rpc.proto describes. A receive thread per connection reads every
 * frame and hands it to its call; callers block on their own call only.
 *
 * Balancing (docs/clients.md): a heartbeat thread calls Health (and Stats)
 * on every endpoint each heart_beat_interval_seconds and marks it up or
 * down; an endpoint that is down is redialled with exponential backoff
 * (capped at one interval) and takes calls again once Health says SERVING.
 * A new call goes to the up endpoint with the fewest calls in flight from
 * this client; ties go to the shorter server queue (Stats `waiting` at the
 * last heartbeat), then round robin. infer_connect is the list of one.
 *
 * Thread-safety: every function may be called from any thread, on the same
 * client, concurrently. infer_close must not race with calls still being
 * started on that client (finish or abandon them first; calls in flight
 * when it runs end with UNAVAILABLE); it stops and joins the heartbeat
 * thread before it returns.
 *
 * Status: every call ends with exactly one status (gRPC codes, below). The
 * functions return that code (INFER_OK = 0) and, when `st` is non-NULL,
 * fill it with the code and a message saying what went wrong. Transport
 * failures are UNAVAILABLE. Failover: a unary call (Generate, Tokenize,
 * ...) that ends UNAVAILABLE is tried again on another up endpoint (each
 * endpoint once per call): unary methods change nothing on the server but
 * their answer, so the caller still gets exactly one result. Streams are
 * never retried once started: a stream whose server goes away ends with
 * UNAVAILABLE and a message saying how many tokens it had received (also
 * infer_call_tokens_received); only a stream whose connection was already
 * closed before its CALL was sent goes to another endpoint.
 *
 * Deadlines: deadline_ms > 0 is a relative deadline for the whole call,
 * retries included (each attempt sends the time left to its server); it is
 * also enforced here (the call ends with DEADLINE_EXCEEDED and a CANCEL
 * goes to the server); <= 0 means none.
 *
 * Ownership: parameters are only read during the call. Results are owned
 * by the caller and released with their _free function; chunk data passed
 * to a callback is valid only during the callback.
 */
#ifndef INFER_CLIENT_H
#define INFER_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* gRPC status codes (same numbers as rpc.proto StatusCode). */
enum {
    INFER_OK = 0,
    INFER_CANCELLED = 1,
    INFER_UNKNOWN = 2,
    INFER_INVALID_ARGUMENT = 3,
    INFER_DEADLINE_EXCEEDED = 4,
    INFER_NOT_FOUND = 5,
    INFER_RESOURCE_EXHAUSTED = 8,
    INFER_UNIMPLEMENTED = 12,
    INFER_INTERNAL = 13,
    INFER_UNAVAILABLE = 14,
    INFER_UNAUTHENTICATED = 16,
};

typedef struct {
    int code;          /* INFER_OK, ... */
    char message[256]; /* "" on OK */
} infer_status;

/* "OK", "CANCELLED", ... ("UNKNOWN" for codes outside the list). */
const char *infer_status_name(int code);

typedef struct infer_client infer_client;
typedef struct infer_call infer_call;

typedef struct {
    const char *api_key;      /* sent with every call; NULL = none */
    uint32_t max_frame_bytes; /* largest frame sent or accepted; 0 = 4 MiB */
    int connect_timeout_ms;   /* 0 = 5000, < 0 = no limit */
    /* tls+tcp:// only (NULL / 0 = defaults): CA bundle to verify the server,
     * a client certificate + key (PEM), the name expected in the server's
     * certificate (default: the URL's host), no verification (tests). */
    const char *tls_ca_file;
    const char *tls_cert_key_file;
    const char *tls_server_name;
    int tls_insecure;
    /* Health (+ Stats) per endpoint every this many seconds; 0 = 5 s,
     * < 0 = no heartbeat (an endpoint that goes down stays down). */
    double heart_beat_interval_seconds;
} infer_client_opts;

/* Connect to one server and start the receive and heartbeat threads.
 * Returns 0, or -1 with a message in err (nothing is created). opts may be
 * NULL (defaults). The same as infer_connect_multi with one URL. */
int infer_connect(const char *url, const infer_client_opts *opts, infer_client **out, char *err,
                  size_t errlen);

#define INFER_MAX_ENDPOINTS 64

/* Connect to n_urls servers (1..INFER_MAX_ENDPOINTS; the same opts for
 * all). Succeeds when at least one answers; the others start down and are
 * retried by the heartbeat. Returns 0, or -1 with a message in err. */
int infer_connect_multi(const char *const *urls, size_t n_urls, const infer_client_opts *opts,
                        infer_client **out, char *err, size_t errlen);

/* Stop the heartbeat thread (joined), close every connection (calls still
 * open end with UNAVAILABLE), wait for the receive threads, free the
 * client. NULL is a no-op. */
void infer_close(infer_client *c);
/* 1 while at least one endpoint is up. */
int infer_connected(infer_client *c);

/* What the client knows of one endpoint (a snapshot). */
typedef struct {
    char url[256];
    int up;               /* takes new calls */
    int in_flight;        /* calls from this client open on it now */
    int64_t calls;        /* calls this client started on it */
    int64_t waiting;      /* server queue at the last heartbeat; -1 unknown */
    char last_error[160]; /* why it went down last ("" if never) */
} infer_endpoint_info;

/* Fill up to max entries (in the order given to infer_connect_multi);
 * returns the number of endpoints. */
size_t infer_endpoints(infer_client *c, infer_endpoint_info *out, size_t max);

/* ---- Generate ---------------------------------------------------------- */

/* "Unset" markers: a field left unset takes the server's default. */
#define INFER_UNSET_INT INT32_MIN
#define INFER_UNSET_FLOAT (-1e30f)
#define INFER_UNSET_BOOL (-1)

typedef struct {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
} infer_chat_message;

/* Exactly one of prompt, prompt_ids, messages. Initialise with
 * infer_gen_params_init (everything unset), then set what you need. */
typedef struct {
    const char *prompt;
    const int32_t *prompt_ids;
    size_t n_prompt_ids;
    const infer_chat_message *messages; /* rendered with the model's chat template */
    size_t n_messages;

    /* sampling */
    float temperature; /* 0 = greedy */
    int top_k;
    float top_p;
    float min_p;
    float repetition_penalty;
    int repeat_last_n;
    int has_seed;
    uint64_t seed;

    int max_tokens;
    int min_tokens;
    const char *const *stop; /* stop strings */
    size_t n_stop;
    const int32_t *stop_ids;
    size_t n_stop_ids;
    int ignore_eos;       /* INFER_UNSET_BOOL, 0, 1 */
    int n;                /* completions */
    int add_special;      /* INFER_UNSET_BOOL, 0, 1 */
    int return_token_ids; /* INFER_UNSET_BOOL, 0, 1 */
    /* structured output (docs/api.md): NULL/"text", "json_object" or
     * "json_schema" with json_schema = the schema as JSON text */
    const char *response_format;
    const char *json_schema;
} infer_gen_params;

void infer_gen_params_init(infer_gen_params *p);

typedef struct {
    int prompt_tokens;
    int completion_tokens;
    double queue_ms; /* submit -> first scheduled */
    double ttft_ms;  /* submit -> first token */
    double total_ms; /* submit -> finish */
} infer_usage;

typedef struct {
    int index;
    char *text; /* NUL-terminated, never NULL after success */
    int32_t *token_ids;
    size_t n_token_ids;
    char finish_reason[16]; /* "length", "stop", "eos", "cancelled", "error" */
} infer_completion;

typedef struct {
    infer_completion *completions; /* ordered by index */
    size_t n_completions;
    infer_usage usage;
} infer_result;

void infer_result_free(infer_result *r);

/* Unary Generate. On INFER_OK, *out holds the result (free it with
 * infer_result_free); otherwise *out is zeroed. */
int infer_generate(infer_client *c, const infer_gen_params *p, int deadline_ms, infer_result *out,
                   infer_status *st);

/* One streamed piece, valid during the callback only. */
typedef struct {
    int index;        /* completion index (n > 1) */
    const char *text; /* new text, NUL-terminated (may be "") */
    size_t text_len;
    const int32_t *token_ids; /* filled when return_token_ids was set */
    size_t n_token_ids;
    const char *finish_reason; /* NULL except on the completion's last chunk */
    int has_usage;             /* last chunk: usage and timings below are set */
    infer_usage usage;
    /* Server's CLOCK_MONOTONIC ms when the token was sampled (last chunk:
     * when the completion finished); 0 when the server did not send it.
     * Comparable with this process's CLOCK_MONOTONIC on the same host only. */
    double sampled_ms;
} infer_chunk;

/* Called on the connection's receive thread, in order, for each chunk of
 * one call. Return 0 to go on, nonzero to cancel the call (it then ends
 * with CANCELLED). Keep it short: it holds up every call on the
 * connection. It may call infer_call_cancel but must not wait on a call. */
typedef int (*infer_chunk_fn)(const infer_chunk *chunk, void *user);

/* Streaming Generate, blocking until the call ends. */
int infer_generate_stream(infer_client *c, const infer_gen_params *p, int deadline_ms,
                          infer_chunk_fn cb, void *user, infer_status *st);

/* The same as a handle: start, then cancel from any thread, wait, free.
 * On INFER_OK *out is the call (release it with infer_call_free, once).
 * Once infer_call_wait has returned, cb is not called again. */
int infer_stream_start(infer_client *c, const infer_gen_params *p, int deadline_ms,
                       infer_chunk_fn cb, void *user, infer_call **out, infer_status *st);
/* Ask the call to end now: it ends with CANCELLED unless it has already
 * ended, and a CANCEL goes to the server (which frees the sequence).
 * Idempotent; does not wait; allowed from the chunk callback. */
void infer_call_cancel(infer_call *call);
/* Wait for the end of the call (its status, or its deadline), fill st and
 * return the code. May be called again; returns the same status. */
int infer_call_wait(infer_call *call, infer_status *st);
/* Token chunks the stream has received so far (the count a lost stream's
 * UNAVAILABLE message gives). */
int64_t infer_call_tokens_received(infer_call *call);
/* Free the call, cancelling it first if it has not ended. Not from the
 * call's own callback. NULL is a no-op. */
void infer_call_free(infer_call *call);

/* ---- other methods ----------------------------------------------------- */

/* Tokenize text. add_special / parse_special: INFER_UNSET_BOOL, 0, 1.
 * On INFER_OK *ids is malloc'd (free it with free(); NULL when empty). */
int infer_tokenize(infer_client *c, const char *text, int add_special, int parse_special,
                   int deadline_ms, int32_t **ids, size_t *n_ids, infer_status *st);
/* Token ids back to text; *text is malloc'd (free()). */
int infer_detokenize(infer_client *c, const int32_t *ids, size_t n_ids, int render_special,
                     int deadline_ms, char **text, infer_status *st);

/* Health: fills status ("SERVING" or "DRAINING"). */
int infer_health(infer_client *c, int deadline_ms, char *status, size_t statuslen,
                 infer_status *st);

/* Server counters (StatsResponse); a field the server left out is -1. */
typedef struct {
    int64_t waiting, running, swapped;
    int64_t blocks_total, blocks_free, blocks_cpu_total, blocks_cpu_free;
    int64_t preemptions_swap, preemptions_recompute;
    int64_t prompt_tokens, generated_tokens, requests_finished, steps;
    int64_t active_calls, connections;
} infer_stats_t;

int infer_stats(infer_client *c, int deadline_ms, infer_stats_t *out, infer_status *st);

/* The loaded model (ModelInfoResponse); absent numbers are -1. */
typedef struct {
    char name[128];
    char architecture[64];
    char path[512];
    char chat_template_family[64];
    int n_vocab, context_length, n_embd, n_layer, n_head, n_head_kv;
    int bos_id, eos_id;
    int64_t weight_bytes;
} infer_model_info_t;

int infer_model_info(infer_client *c, int deadline_ms, infer_model_info_t *out, infer_status *st);

#ifdef __cplusplus
}
#endif

#endif
