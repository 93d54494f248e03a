/*
 * server_config.c - the `server` key table (see server_config.h): the
 * listener addresses, message and request limits, the API key. The generic
 * mechanism (engine/config.c) parses, range-checks, overrides and prints
 * these keys; the rules only the server knows (address syntax, what an API
 * key may contain) are the check hooks here.
 */
#include "server/server_config.h"

#include "http/httpd.h"
#include "rpc/rpc.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "host:port" with host empty, a name, an IPv4 address or [IPv6], and a
 * decimal port 0..65535 (0: let the system pick). */
static int host_port_ok(const char *s) {
    const char *colon = strrchr(s, ':');
    if (!colon) return 0;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close + 1 != colon || close == s + 1) return 0;
    } else {
        for (const char *p = s; p < colon; p++)
            if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_' || *p == '*'))
                return 0;
    }
    const char *port = colon + 1;
    size_t n = strlen(port);
    if (n == 0 || n > 5) return 0;
    long v = 0;
    for (const char *p = port; *p; p++) {
        if (!isdigit((unsigned char)*p)) return 0;
        v = v * 10 + (*p - '0');
    }
    return v <= 65535;
}

static int listen_addr_ok(const char *s) {
    if (strncmp(s, "tcp://", 6) == 0) return host_port_ok(s + 6);
    if (strncmp(s, "ipc://", 6) == 0) return s[6] != '\0';
    return 0;
}

/* What an API key may hold: printable ASCII without spaces, so it travels
 * in a header and a frame field unchanged. */
static int api_key_ok(const char *s) {
    for (const char *p = s; *p; p++)
        if (*p < 0x21 || *p > 0x7e) return 0;
    return 1;
}

/* server.listen: each address's syntax, no address twice. */
static int check_listen(const config_key *k, const void *st, char *err, size_t errlen) {
    const server_settings *s = st;
    for (int i = 0; i < s->n_listen; i++) {
        if (!listen_addr_ok(s->listen[i])) {
            snprintf(err, errlen,
                     "%s.%s[%d]: expected \"tcp://host:port\" or \"ipc:///path\", got \"%.200s\"",
                     k->section, k->name, i, s->listen[i]);
            return -1;
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(s->listen[j], s->listen[i]) == 0) {
                snprintf(err, errlen, "%s.%s[%d]: \"%.200s\" is listed twice", k->section, k->name,
                         i, s->listen[i]);
                return -1;
            }
        }
    }
    return 0;
}

static int check_http_listen(const config_key *k, const void *st, char *err, size_t errlen) {
    const char *s = ((const server_settings *)st)->http_listen;
    if (s[0] && (strncmp(s, "http://", 7) != 0 || !host_port_ok(s + 7))) {
        snprintf(err, errlen, "%s.%s: expected \"http://host:port\" or \"\", got \"%.200s\"",
                 k->section, k->name, s);
        return -1;
    }
    return 0;
}

static int check_api_key(const config_key *k, const void *st, char *err, size_t errlen) {
    /* The key is never echoed: error messages end up in logs. */
    if (!api_key_ok(((const server_settings *)st)->api_key)) {
        snprintf(err, errlen, "%s.%s: must be printable ASCII without spaces", k->section, k->name);
        return -1;
    }
    return 0;
}

#define SRV(f) offsetof(server_settings, f)

static const config_key server_keys[] = {
    {.section = SERVER_CONFIG_SECTION,
     .name = "listen",
     .kind = CONFIG_STRLIST,
     .off = SRV(listen),
     .cap = sizeof(((server_settings *)0)->listen[0]),
     .max = SERVER_MAX_LISTEN,
     .count_off = SRV(n_listen),
     .entries = "addresses",
     .check = check_listen},
    {.section = SERVER_CONFIG_SECTION,
     .name = "http_listen",
     .kind = CONFIG_STRING,
     .off = SRV(http_listen),
     .cap = sizeof(((server_settings *)0)->http_listen),
     .check = check_http_listen},
    CONFIG_INT_KEY(server_settings, SERVER_CONFIG_SECTION, "max_message_bytes", max_message_bytes,
                   1024, 1073741824),
    {.section = SERVER_CONFIG_SECTION,
     .name = "api_key",
     .kind = CONFIG_STRING,
     .off = SRV(api_key),
     .cap = sizeof(((server_settings *)0)->api_key),
     .extra = CONFIG_SECRET,
     .check = check_api_key},
    CONFIG_INT_KEY(server_settings, SERVER_CONFIG_SECTION, "max_stop_strings", max_stop_strings, 0,
                   1024),
    CONFIG_INT_KEY(server_settings, SERVER_CONFIG_SECTION, "request_timeout_ms", request_timeout_ms,
                   0, 86400000),
    CONFIG_INT_KEY(server_settings, SERVER_CONFIG_SECTION, "drain_timeout_ms", drain_timeout_ms, 0,
                   3600000),
    CONFIG_INT_KEY(server_settings, SERVER_CONFIG_SECTION, "max_connections", max_connections, 1,
                   1000000),
    CONFIG_INT_KEY(server_settings, SERVER_CONFIG_SECTION, "handshake_timeout_ms",
                   handshake_timeout_ms, 1, 3600000),
    CONFIG_INT_KEY(server_settings, SERVER_CONFIG_SECTION, "frame_timeout_ms", frame_timeout_ms, 1,
                   3600000),
    CONFIG_INT_KEY(server_settings, SERVER_CONFIG_SECTION, "rpc_idle_timeout_ms",
                   rpc_idle_timeout_ms, 0, 86400000),
    CONFIG_INT_KEY(server_settings, SERVER_CONFIG_SECTION, "http_idle_timeout_ms",
                   http_idle_timeout_ms, 1, 86400000),
    CONFIG_INT_KEY(server_settings, SERVER_CONFIG_SECTION, "http_workers", http_workers, 1, 65536),
};

static const char *const server_sections[] = {SERVER_CONFIG_SECTION};

void server_settings_defaults(server_settings *s) {
    memset(s, 0, sizeof *s);
    snprintf(s->listen[0], sizeof s->listen[0], "tcp://127.0.0.1:8700");
    s->n_listen = 1;
    snprintf(s->http_listen, sizeof s->http_listen, "http://127.0.0.1:8080");
    s->max_message_bytes = 4 << 20;
    s->max_stop_strings = 16;
    s->request_timeout_ms = 0;
    s->drain_timeout_ms = 30000;
    s->max_connections = HTTPD_DEFAULT_MAX_CONNECTIONS;
    s->handshake_timeout_ms = RPC_DEFAULT_FIRST_FRAME_TIMEOUT_MS;
    s->frame_timeout_ms = RPC_DEFAULT_FRAME_TIMEOUT_MS;
    s->rpc_idle_timeout_ms = 300000;
    s->http_idle_timeout_ms = HTTPD_DEFAULT_KEEPALIVE_IDLE_MS;
    s->http_workers = HTTPD_DEFAULT_N_WORKERS;
}
static void server_defaults(void *st) { server_settings_defaults(st); }

/* ENGINE_API_KEY, when set and non-empty, replaces server.api_key. */
static int server_apply_env(void *st, char *err, size_t errlen) {
    server_settings *s = st;
    const char *key = getenv("ENGINE_API_KEY");
    if (!key || !*key) return 0;
    if (strlen(key) >= sizeof s->api_key) {
        snprintf(err, errlen, "ENGINE_API_KEY: longer than %zu bytes", sizeof s->api_key - 1);
        return -1;
    }
    if (!api_key_ok(key)) {
        snprintf(err, errlen, "ENGINE_API_KEY: must be printable ASCII without spaces");
        return -1;
    }
    snprintf(s->api_key, sizeof s->api_key, "%s", key);
    return 0;
}

const config_table server_config_table = {
    .sections = server_sections,
    .n_sections = 1,
    .keys = server_keys,
    .n_keys = (int)(sizeof server_keys / sizeof server_keys[0]),
    .size = sizeof(server_settings),
    .defaults = server_defaults,
    .apply_env = server_apply_env,
};

void server_model_id(const char *model_path, char *out, size_t cap) {
    const char *base = strrchr(model_path, '/');
    base = base ? base + 1 : model_path;
    if (!*base) base = "model";
    size_t n = strlen(base);
    if (n >= cap) n = cap - 1;
    memcpy(out, base, n);
    out[n] = 0;
    if (n > 5 && strcmp(out + n - 5, ".gguf") == 0) out[n - 5] = 0;
}

int server_model_accepts(const char *model_path, const char *asked) {
    char id[1024];
    server_model_id(model_path, id, sizeof id);
    if (strcmp(asked, id) == 0) return 1;
    size_t n = strlen(id);
    return strncmp(asked, id, n) == 0 && strcmp(asked + n, ".gguf") == 0;
}
