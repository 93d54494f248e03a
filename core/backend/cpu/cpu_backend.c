/*
 * cpu_backend.c - the CPU implementation of backend.h: the ops table, and
 * creating and freeing the backend's state (cpu_internal.h says which file
 * implements which op). Jobs run with tp_run_any: all work is claimed
 * dynamically, so a worker the OS has not scheduled yet does not hold a
 * step up.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/backend/cpu/cpu_internal.h"

static const backend_ops CPU_OPS = {
    .name = "cpu",
    .matmul = cpu_matmul,
    .matmul_n = cpu_matmul_n,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .swiglu = cpu_swiglu,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .embed = cpu_embed,
    .layernorm = cpu_layernorm,
    .add_bias = cpu_add_bias,
    .gelu = cpu_gelu,
    .host_for = cpu_host_for,
};

const char *be_numerics_name(be_numerics n) { return n == BE_NUMERICS_FAST ? "fast" : "exact"; }

int be_numerics_parse(const char *name, be_numerics *out) {
    if (strcmp(name, "exact") == 0) *out = BE_NUMERICS_EXACT;
    else if (strcmp(name, "fast") == 0) *out = BE_NUMERICS_FAST;
    else return -1;
    return 0;
}

backend *backend_cpu_create(int n_threads, char *err, size_t errlen) {
    be_cpu_options o = {n_threads, BE_NUMERICS_EXACT};
    return backend_cpu_create_opts(&o, err, errlen);
}

backend *backend_cpu_create_opts(const be_cpu_options *opt, char *err, size_t errlen) {
    int n_threads = opt ? opt->n_threads : 0;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    backend *be = calloc(1, sizeof *be);
    cpu_impl *ci = calloc(1, sizeof *ci);
    if (!be || !ci) goto oom;
    ci->k = kern_select();
    ci->numerics = opt && opt->numerics == BE_NUMERICS_FAST ? BE_NUMERICS_FAST : BE_NUMERICS_EXACT;
    ci->rope_rows = -1; /* no RoPE table yet */
    ci->per_thread = calloc((size_t)n_threads, sizeof *ci->per_thread);
    ci->ranges = aligned_alloc(64, (size_t)n_threads * sizeof *ci->ranges);
    if (!ci->per_thread || !ci->ranges) goto oom;
    ci->pool = tp_create(n_threads);
    if (!ci->pool) {
        snprintf(err, errlen, "cannot start %d CPU threads", n_threads);
        free(ci->per_thread);
        free(ci->ranges);
        free(ci);
        free(be);
        return NULL;
    }
    be->ops = &CPU_OPS;
    be->n_threads = n_threads;
    be->impl = ci;
    return be;
oom:
    snprintf(err, errlen, "out of memory creating the CPU backend");
    if (ci) {
        free(ci->per_thread);
        free(ci->ranges);
    }
    free(ci);
    free(be);
    return NULL;
}

const char *backend_cpu_isa(const backend *be) { return ((const cpu_impl *)be->impl)->k->isa; }
void backend_cpu_forget_weights(backend *be) { cpu_packed_forget(be->impl); }

be_numerics backend_cpu_numerics(const backend *be) {
    return ((const cpu_impl *)be->impl)->numerics;
}

void backend_free(backend *be) {
    if (!be) return;
    cpu_impl *ci = be->impl;
    if (ci) {
        tp_free(ci->pool);
        for (int t = 0; t < be->n_threads; t++) free(ci->per_thread[t].buf);
        free(ci->per_thread);
        free(ci->xq);
        free(ci->xc);
        free(ci->ranges);
        free(ci->row_seq);
        free(ci->seq_off_start);
        free(ci->slot_off);
        free(ci->attn_tasks);
        free(ci->row_key);
        free(ci->rope_pos);
        free(ci->rope_cs);
        backend_cpu_forget_weights(be);
        free(ci);
    }
    free(be);
}
