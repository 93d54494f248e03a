/*
 * server_config.h - the server's settings: the `server` section of the JSON
 * configuration (docs/config.md), its key table for the mechanism in
 * engine/config.h, its defaults, and ENGINE_API_KEY from the environment.
 *
 * infer-server binds server_config_table next to config_engine_table;
 * programs that run no server leave it unbound and skip the section
 * (SERVER_CONFIG_SECTION).
 * Thread-safety: server_settings is a plain value; the table is constant.
 */
#ifndef SERVER_SERVER_CONFIG_H
#define SERVER_SERVER_CONFIG_H

#include "engine/config.h"

#define SERVER_CONFIG_SECTION "server"
#define SERVER_MAX_LISTEN 8

typedef struct {
    char listen[SERVER_MAX_LISTEN][256]; /* nng-style "tcp://host:port" or "ipc:///path" */
    int n_listen;                        /* 0 = no RPC listener */
    char http_listen[256];               /* "http://host:port"; "" = no HTTP listener */
    int max_message_bytes;               /* largest request / response message */
    char api_key[256];                   /* "" = no authentication */
    int max_stop_strings;                /* stop strings per request */
    int request_timeout_ms;              /* 0 = no deadline */
    int drain_timeout_ms;                /* on shutdown, time to let running requests finish */
    /* What a connection may cost, on the RPC and the HTTP listeners alike:
     * connections beyond max_connections are refused (RPC: STATUS
     * RESOURCE_EXHAUSTED, HTTP: 503); a new connection's first frame / request
     * head must arrive within handshake_timeout_ms; a frame that started must
     * arrive within frame_timeout_ms (RPC), a request body may stall no longer
     * (HTTP); idle connections close after rpc_idle_timeout_ms (no call in
     * flight; 0 = never) / http_idle_timeout_ms (keep-alive). */
    int max_connections;
    int handshake_timeout_ms;
    int frame_timeout_ms;
    int rpc_idle_timeout_ms;
    int http_idle_timeout_ms;
    int http_workers; /* HTTP requests handled at once; more wait in a bounded queue */
} server_settings;

/* The `server` section into a server_settings. Its apply_env takes
 * ENGINE_API_KEY, when set and non-empty, as server.api_key (so the key can
 * stay out of config files); config_to_json shows the key as "<redacted>". */
extern const config_table server_config_table;

void server_settings_defaults(server_settings *s);

/* The one name of the served model, the same on every front end: HTTP's
 * "model" fields and /v1/models ids, RPC ModelInfo.name (so infer-cli):
 * the model file's name without its directory and ".gguf". */
void server_model_id(const char *model_path, char *out, size_t cap);
/* Whether a client's "model" (a request body, /v1/models/{id}) names the
 * served model: its id, or the model file's name with ".gguf". */
int server_model_accepts(const char *model_path, const char *asked);

#endif
