/*
 * test_paged_kv.c - the paged KV block manager keeps its promises: block
 * tables grow across block boundaries and map positions to slots, a failed
 * call changes nothing, fork shares blocks and copy-on-write gives each
 * sequence its own data, truncate frees what it no longer covers, swap out /
 * swap in round-trips the bytes (RAM and a swap file), handles are reused
 * and bad ones rejected. A long seeded random run checks every invariant
 * after every operation against a shadow model of lengths, tiers and data.
 * The prefix cache: lookups find only computed full blocks (never the whole
 * prompt), shared blocks are taken by reference, freed ones stay cached and
 * are evicted least recently used first, a rewrite never changes a
 * registered block, and a random run checks that every block a lookup hands
 * out holds the KV of the new sequence's own tokens.
 */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "paged_kv/paged_kv.h"
#include "tests/common/test_util.h"

static pkv_pool *make_pool(int n_layer, int kv_dim, int bs, int nb, int nb_cpu, kv_dtype dt,
                           const char *swap_path) {
    pkv_config c = {n_layer, kv_dim, bs, nb, nb_cpu, dt, swap_path, 0, 0};
    pkv_pool *p = NULL;
    char err[256];
    int rc = pkv_create(&c, &p, err, sizeof err);
    CHECKF(rc == 0 && p, "pkv_create: %d %s", rc, err);
    return rc == 0 ? p : NULL;
}

static int pool_ok(const pkv_pool *p) {
    char err[256] = "";
    int rc = pkv_check(p, err, sizeof err);
    CHECKF(rc == 0, "pkv_check: %s", err);
    return rc == 0;
}

static int div_up(int a, int b) { return (a + b - 1) / b; }

/* ---- slot contents: a row pattern per (stamp, layer, K|V) ---- */

static size_t row_bytes(pkv_pool *p) {
    kv_cache *kv = pkv_device_cache(p);
    return (size_t)kv->kv_dim * kv->elt_size;
}

static uint8_t pat(uint32_t stamp, int lk, size_t j) {
    uint32_t x = stamp * 2654435761u + (uint32_t)lk * 40503u + (uint32_t)j * 2246822519u;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    return (uint8_t)x;
}

static void write_slot(pkv_pool *p, pkv_tier t, int32_t slot, uint32_t stamp) {
    int n_layer = pkv_device_cache(p)->n_layer;
    size_t rb = row_bytes(p);
    for (int l = 0; l < n_layer; l++)
        for (int k = 0; k < 2; k++) {
            uint8_t *r = pkv_slot_ptr(p, t, l, k, slot);
            for (size_t j = 0; j < rb; j++) r[j] = pat(stamp, l * 2 + k, j);
        }
}

static int slot_has(pkv_pool *p, pkv_tier t, int32_t slot, uint32_t stamp) {
    int n_layer = pkv_device_cache(p)->n_layer;
    size_t rb = row_bytes(p);
    for (int l = 0; l < n_layer; l++)
        for (int k = 0; k < 2; k++) {
            const uint8_t *r = pkv_slot_ptr(p, t, l, k, slot);
            if (!r) return 0;
            for (size_t j = 0; j < rb; j++)
                if (r[j] != pat(stamp, l * 2 + k, j)) return 0;
        }
    return 1;
}

/* Every byte of a slot's rows equals v. */
static int slot_all(pkv_pool *p, pkv_tier t, int32_t slot, uint8_t v) {
    int n_layer = pkv_device_cache(p)->n_layer;
    size_t rb = row_bytes(p);
    for (int l = 0; l < n_layer; l++)
        for (int k = 0; k < 2; k++) {
            const uint8_t *r = pkv_slot_ptr(p, t, l, k, slot);
            for (size_t j = 0; j < rb; j++)
                if (r[j] != v) return 0;
        }
    return 1;
}

/* Write stamp base + pos at every position of a device sequence. */
static void write_seq(pkv_pool *p, int seq, int from, uint32_t base) {
    for (int i = from; i < pkv_seq_len(p, seq); i++)
        write_slot(p, PKV_DEVICE, pkv_seq_slot(p, seq, i), base + (uint32_t)i);
}

static int seq_has(pkv_pool *p, int seq, int from, int to, uint32_t base) {
    for (int i = from; i < to; i++)
        if (!slot_has(p, pkv_seq_tier(p, seq), pkv_seq_slot(p, seq, i), base + (uint32_t)i))
            return 0;
    return 1;
}

/* ---- snapshots, to show a failed call changed nothing ---- */

#define SNAP_SEQS 8
#define SNAP_BLOCKS 64
typedef struct {
    pkv_stats st;
    int len[SNAP_SEQS], tier[SNAP_SEQS], nb[SNAP_SEQS];
    int32_t table[SNAP_SEQS][SNAP_BLOCKS];
} snapshot;

static void snap(const pkv_pool *p, const int *seqs, int n, snapshot *s) {
    memset(s, 0, sizeof *s);
    pkv_get_stats(p, &s->st);
    for (int i = 0; i < n; i++) {
        s->len[i] = pkv_seq_len(p, seqs[i]);
        s->tier[i] = (int)pkv_seq_tier(p, seqs[i]);
        const int32_t *t = pkv_seq_block_table(p, seqs[i], &s->nb[i]);
        if (t && s->nb[i] <= SNAP_BLOCKS) memcpy(s->table[i], t, (size_t)s->nb[i] * sizeof *t);
    }
}

static int same_snap(const pkv_pool *p, const int *seqs, int n, const snapshot *a) {
    snapshot b;
    snap(p, seqs, n, &b);
    return memcmp(a, &b, sizeof b) == 0;
}

/* ---- unit cases ---- */

static void test_append_grows_across_block_boundaries(void) {
    pkv_pool *p = make_pool(2, 8, 4, 8, 0, KV_F32, NULL);
    if (!p) return;
    CHECK(pkv_block_size(p) == 4);
    CHECK(pkv_n_total(p, PKV_DEVICE) == 8 && pkv_n_free(p, PKV_DEVICE) == 8);
    CHECK(pkv_n_total(p, PKV_CPU) == 0 && pkv_n_free(p, PKV_CPU) == 0);
    CHECK(pkv_block_bytes(p) == (size_t)2 * 2 * 4 * 8 * 4);
    CHECK(pkv_device_cache(p)->block_bytes == pkv_block_bytes(p));
    int s = pkv_seq_new(p);
    CHECK(s >= 0 && pkv_seq_len(p, s) == 0 && pkv_seq_tier(p, s) == PKV_DEVICE);
    CHECK(pkv_seq_n_blocks(p, s) == 0);
    CHECK(pkv_blocks_needed(p, s, 0) == 0);
    CHECK(pkv_blocks_needed(p, s, 1) == 1);
    CHECK(pkv_blocks_needed(p, s, 4) == 1);
    CHECK(pkv_blocks_needed(p, s, 5) == 2);
    static const int steps[][3] = {/* append, expected len, expected blocks */
                                   {3, 3, 1},  {1, 4, 1},  {1, 5, 2}, {0, 5, 2},
                                   {7, 12, 3}, {1, 13, 4}, {3, 16, 4}};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        int want = div_up(steps[i][1], 4) - pkv_seq_n_blocks(p, s);
        CHECK(pkv_blocks_needed(p, s, steps[i][0]) == want);
        int free0 = pkv_n_free(p, PKV_DEVICE);
        CHECK(pkv_seq_append(p, s, steps[i][0]) == 0);
        CHECKF(pkv_seq_len(p, s) == steps[i][1], "step %zu", i);
        CHECKF(pkv_seq_n_blocks(p, s) == steps[i][2], "step %zu", i);
        CHECK(free0 - pkv_n_free(p, PKV_DEVICE) == want);
        pool_ok(p);
    }
    CHECK(pkv_seq_slot(p, s, -1) == -1);
    CHECK(pkv_seq_slot(p, s, 16) == -1);
    pkv_seq_free(p, s);
    CHECK(pkv_n_free(p, PKV_DEVICE) == 8);
    pool_ok(p);
    pkv_free(p);
}

static void test_slots_map_positions_to_blocks(void) {
    pkv_pool *p = make_pool(3, 4, 4, 16, 0, KV_F16, NULL);
    if (!p) return;
    int a = pkv_seq_new(p), b = pkv_seq_new(p);
    CHECK(a >= 0 && b >= 0 && a != b);
    /* Interleaved growth, so the two tables hold interleaved blocks. */
    for (int i = 0; i < 5; i++) {
        CHECK(pkv_seq_append(p, a, 3) == 0);
        CHECK(pkv_seq_append(p, b, 2 + i) == 0);
    }
    pool_ok(p);
    kv_cache *kv = pkv_device_cache(p);
    int seen[16 * 4] = {0};
    int seqs[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        int nb;
        const int32_t *t = pkv_seq_block_table(p, seqs[k], &nb);
        CHECK(nb == div_up(pkv_seq_len(p, seqs[k]), 4));
        for (int i = 0; i < pkv_seq_len(p, seqs[k]); i++) {
            int32_t slot = pkv_seq_slot(p, seqs[k], i);
            CHECKF(slot == t[i / 4] * 4 + i % 4, "seq %d pos %d slot %d", k, i, slot);
            CHECK(slot >= 0 && slot < 16 * 4 && !seen[slot]);
            if (slot >= 0 && slot < 64) seen[slot] = 1;
            CHECK(pkv_slot_ptr(p, PKV_DEVICE, 2, 1, slot) == kv_slot_ptr(kv, 2, 1, slot));
        }
    }
    write_seq(p, a, 0, 1000);
    write_seq(p, b, 0, 2000);
    CHECK(seq_has(p, a, 0, pkv_seq_len(p, a), 1000));
    CHECK(seq_has(p, b, 0, pkv_seq_len(p, b), 2000));
    CHECK(pkv_slot_ptr(p, PKV_DEVICE, 3, 0, 0) == NULL);
    CHECK(pkv_slot_ptr(p, PKV_DEVICE, 0, 2, 0) == NULL);
    CHECK(pkv_slot_ptr(p, PKV_DEVICE, 0, 0, 64) == NULL);
    CHECK(pkv_slot_ptr(p, PKV_CPU, 0, 0, 0) == NULL);
    pkv_free(p);
}

static void test_enomem_leaves_state_unchanged(void) {
    pkv_pool *p = make_pool(1, 4, 4, 4, 0, KV_F32, NULL);
    if (!p) return;
    int a = pkv_seq_new(p), b = pkv_seq_new(p);
    CHECK(pkv_seq_append(p, a, 10) == 0); /* 3 blocks, last one partial */
    write_seq(p, a, 0, 100);
    int seqs[3] = {a, b, -1};
    snapshot s0;
    snap(p, seqs, 2, &s0);
    CHECK(pkv_blocks_needed(p, b, 5) == 2);
    CHECK(pkv_seq_append(p, b, 5) == PKV_ENOMEM);
    CHECK(same_snap(p, seqs, 2, &s0));
    CHECK(pkv_seq_append(p, a, 7) == PKV_ENOMEM); /* 17 tokens: 5 blocks */
    CHECK(same_snap(p, seqs, 2, &s0));
    pool_ok(p);

    /* A fork's copy-on-write needs a block too. */
    int c = pkv_seq_fork(p, a);
    CHECK(c >= 0);
    CHECK(pkv_seq_append(p, b, 4) == 0); /* takes the last free block */
    CHECK(pkv_n_free(p, PKV_DEVICE) == 0);
    seqs[2] = c;
    snap(p, seqs, 3, &s0);
    CHECK(pkv_blocks_needed(p, c, 1) == 1);
    CHECK(pkv_seq_append(p, c, 1) == PKV_ENOMEM);
    CHECK(pkv_seq_append(p, a, 1) == PKV_ENOMEM);
    CHECK(same_snap(p, seqs, 3, &s0));
    CHECK(pkv_blocks_needed(p, c, 0) == 0);
    CHECK(pkv_seq_append(p, c, 0) == 0);
    CHECK(same_snap(p, seqs, 3, &s0));
    CHECK(seq_has(p, c, 0, 10, 100));
    pool_ok(p);
    pkv_free(p);
}

static void test_fork_copy_on_write_copies_the_filled_part(void) {
    pkv_pool *p = make_pool(2, 8, 4, 16, 0, KV_F16, NULL);
    if (!p) return;
    kv_cache *kv = pkv_device_cache(p);
    memset(kv->data, 0xEE, (size_t)kv->num_blocks * kv->block_bytes);
    int a = pkv_seq_new(p);
    CHECK(pkv_seq_append(p, a, 6) == 0);
    write_seq(p, a, 0, 100);
    int nb;
    const int32_t *ta = pkv_seq_block_table(p, a, &nb);
    int32_t a0 = ta[0], a1 = ta[1];
    /* Stale bytes past A's end, in its partial block: not part of A. */
    write_slot(p, PKV_DEVICE, a1 * 4 + 2, 7777);
    write_slot(p, PKV_DEVICE, a1 * 4 + 3, 7778);

    int b = pkv_seq_fork(p, a);
    CHECK(b >= 0 && b != a && pkv_seq_len(p, b) == 6);
    const int32_t *tb = pkv_seq_block_table(p, b, &nb);
    CHECK(nb == 2 && tb[0] == a0 && tb[1] == a1);
    CHECK(pkv_n_free(p, PKV_DEVICE) == 14); /* sharing costs nothing */
    pool_ok(p);
    CHECK(pkv_blocks_needed(p, a, 1) == 1);
    CHECK(pkv_blocks_needed(p, b, 1) == 1);
    CHECK(pkv_blocks_needed(p, b, 3) == 2); /* copy + one new block */

    pkv_stats st;
    CHECK(pkv_seq_append(p, b, 1) == 0);
    pkv_get_stats(p, &st);
    CHECK(st.blocks_copied_cow == 1);
    CHECK(pkv_n_free(p, PKV_DEVICE) == 13);
    tb = pkv_seq_block_table(p, b, &nb);
    CHECK(tb[0] == a0 && tb[1] != a1); /* full block stays shared */
    int32_t b1 = tb[1];
    CHECK(seq_has(p, b, 0, 6, 100));                  /* filled rows copied... */
    CHECK(slot_all(p, PKV_DEVICE, b1 * 4 + 3, 0xEE)); /* ...and nothing else */
    CHECK(slot_all(p, PKV_DEVICE, b1 * 4 + 2, 0xEE));
    write_slot(p, PKV_DEVICE, pkv_seq_slot(p, b, 6), 2006);
    CHECK(pkv_seq_slot(p, b, 6) == b1 * 4 + 2);
    pool_ok(p);

    /* A is now the only owner of its partial block: no second copy. */
    CHECK(pkv_blocks_needed(p, a, 1) == 0);
    CHECK(pkv_seq_append(p, a, 1) == 0);
    pkv_get_stats(p, &st);
    CHECK(st.blocks_copied_cow == 1);
    CHECK(pkv_seq_slot(p, a, 6) == a1 * 4 + 2);
    CHECK(slot_has(p, PKV_DEVICE, a1 * 4 + 3, 7778)); /* B's copy did not touch A's block */
    write_slot(p, PKV_DEVICE, pkv_seq_slot(p, a, 6), 1006);

    /* Both grow into new blocks; each sees its own data. */
    CHECK(pkv_seq_append(p, a, 3) == 0);
    CHECK(pkv_seq_append(p, b, 5) == 0);
    write_seq(p, a, 7, 100);
    write_seq(p, b, 7, 200);
    CHECK(seq_has(p, a, 0, 6, 100) && seq_has(p, b, 0, 6, 100));
    CHECK(slot_has(p, PKV_DEVICE, pkv_seq_slot(p, a, 6), 1006));
    CHECK(slot_has(p, PKV_DEVICE, pkv_seq_slot(p, b, 6), 2006));
    CHECK(seq_has(p, a, 7, 10, 100) && seq_has(p, b, 7, 12, 200));
    pool_ok(p);

    /* A full last block is never copied; three owners copy twice. */
    int c = pkv_seq_new(p);
    CHECK(pkv_seq_append(p, c, 8) == 0);
    int d = pkv_seq_fork(p, c);
    CHECK(pkv_blocks_needed(p, d, 1) == 1);
    CHECK(pkv_seq_append(p, d, 1) == 0);
    pkv_get_stats(p, &st);
    CHECK(st.blocks_copied_cow == 1);
    int e = pkv_seq_fork(p, d), f = pkv_seq_fork(p, d);
    CHECK(e >= 0 && f >= 0);
    CHECK(pkv_seq_append(p, e, 1) == 0 && pkv_seq_append(p, f, 1) == 0);
    CHECK(pkv_blocks_needed(p, d, 1) == 0);
    pkv_get_stats(p, &st);
    CHECK(st.blocks_copied_cow == 3);
    pool_ok(p);
    int all[] = {a, b, c, d, e, f};
    for (int i = 0; i < 6; i++) pkv_seq_free(p, all[i]);
    CHECK(pkv_n_free(p, PKV_DEVICE) == 16);
    pool_ok(p);
    pkv_free(p);
}

static void test_truncate_frees_uncovered_blocks(void) {
    pkv_pool *p = make_pool(1, 4, 4, 8, 0, KV_F32, NULL);
    if (!p) return;
    int a = pkv_seq_new(p);
    CHECK(pkv_seq_append(p, a, 10) == 0);
    write_seq(p, a, 0, 100);
    CHECK(pkv_seq_truncate(p, a, 11) == PKV_EINVAL);
    CHECK(pkv_seq_truncate(p, a, -1) == PKV_EINVAL);
    CHECK(pkv_seq_truncate(p, a, 10) == 0 && pkv_n_free(p, PKV_DEVICE) == 5);
    CHECK(pkv_seq_truncate(p, a, 9) == 0 && pkv_n_free(p, PKV_DEVICE) == 5);
    CHECK(pkv_seq_truncate(p, a, 8) == 0 && pkv_n_free(p, PKV_DEVICE) == 6);
    CHECK(pkv_seq_n_blocks(p, a) == 2 && pkv_seq_slot(p, a, 8) == -1);
    CHECK(seq_has(p, a, 0, 8, 100));
    pool_ok(p);
    CHECK(pkv_seq_append(p, a, 2) == 0 && pkv_seq_len(p, a) == 10);
    write_seq(p, a, 8, 100);

    /* Truncating a fork into a shared block: the next append copies it. */
    int b = pkv_seq_fork(p, a);
    CHECK(pkv_seq_truncate(p, b, 5) == 0);
    CHECK(pkv_seq_n_blocks(p, b) == 2 && pkv_n_free(p, PKV_DEVICE) == 5);
    pool_ok(p);
    CHECK(pkv_blocks_needed(p, b, 1) == 1);
    CHECK(pkv_seq_append(p, b, 1) == 0);
    write_slot(p, PKV_DEVICE, pkv_seq_slot(p, b, 5), 555);
    CHECK(seq_has(p, a, 0, 10, 100)); /* A's position 5 untouched */
    CHECK(seq_has(p, b, 0, 5, 100));
    CHECK(pkv_seq_truncate(p, b, 0) == 0 && pkv_seq_n_blocks(p, b) == 0);
    CHECK(pkv_seq_truncate(p, a, 0) == 0);
    CHECK(pkv_n_free(p, PKV_DEVICE) == 8);
    pool_ok(p);
    pkv_free(p);
}

/* Fill every byte of a sequence's blocks (filled or not) with a pattern. */
static void fill_blocks(pkv_pool *p, int seq, uint8_t salt) {
    int nb;
    const int32_t *t = pkv_seq_block_table(p, seq, &nb);
    size_t bb = pkv_block_bytes(p);
    for (int i = 0; i < nb; i++) {
        uint8_t *d = pkv_slot_ptr(p, pkv_seq_tier(p, seq), 0, 0, t[i] * pkv_block_size(p));
        for (size_t j = 0; j < bb; j++) d[j] = (uint8_t)(j * 31 + (size_t)i * 7 + salt);
    }
}

static int blocks_hold(pkv_pool *p, int seq, uint8_t salt) {
    int nb;
    const int32_t *t = pkv_seq_block_table(p, seq, &nb);
    size_t bb = pkv_block_bytes(p);
    for (int i = 0; i < nb; i++) {
        const uint8_t *d = pkv_slot_ptr(p, pkv_seq_tier(p, seq), 0, 0, t[i] * pkv_block_size(p));
        for (size_t j = 0; j < bb; j++)
            if (d[j] != (uint8_t)(j * 31 + (size_t)i * 7 + salt)) return 0;
    }
    return 1;
}

static void swap_roundtrip(const char *swap_path) {
    pkv_pool *p = make_pool(2, 6, 4, 8, 8, KV_F16, swap_path);
    if (!p) return;
    size_t bb = pkv_block_bytes(p);
    if (swap_path) {
        struct stat stb;
        CHECK(stat(swap_path, &stb) == 0 && (size_t)stb.st_size == 8 * bb);
    }
    int a = pkv_seq_new(p), b = pkv_seq_new(p);
    CHECK(pkv_seq_append(p, a, 13) == 0 && pkv_seq_append(p, b, 6) == 0);
    fill_blocks(p, a, 1);
    fill_blocks(p, b, 2);
    CHECK(pkv_swap_in(p, a) == PKV_ESTATE);
    CHECK(pkv_blocks_needed(p, a, 3) == 0);

    CHECK(pkv_swap_out(p, a) == 0);
    CHECK(pkv_seq_tier(p, a) == PKV_CPU && pkv_seq_len(p, a) == 13);
    CHECK(pkv_n_free(p, PKV_DEVICE) == 6 && pkv_n_free(p, PKV_CPU) == 4);
    CHECK(blocks_hold(p, a, 1)); /* read through the CPU tier */
    pool_ok(p);
    CHECK(pkv_swap_out(p, a) == PKV_ESTATE);
    CHECK(pkv_seq_append(p, a, 1) == PKV_ESTATE);
    CHECK(pkv_blocks_needed(p, a, 3) == 4);
    CHECK(pkv_blocks_needed(p, a, 4) == 5);

    /* Scrub the device tier: swap-in must bring the bytes back itself. */
    kv_cache *kv = pkv_device_cache(p);
    int nb;
    const int32_t *tb = pkv_seq_block_table(p, b, &nb);
    for (int blk = 0; blk < kv->num_blocks; blk++) {
        int mine = 0;
        for (int i = 0; i < nb; i++) mine |= tb[i] == blk;
        if (!mine) memset(kv->data + (size_t)blk * bb, 0, bb);
    }
    CHECK(pkv_swap_in(p, a) == 0);
    CHECK(pkv_seq_tier(p, a) == PKV_DEVICE && pkv_seq_len(p, a) == 13);
    CHECK(pkv_n_free(p, PKV_DEVICE) == 2 && pkv_n_free(p, PKV_CPU) == 8);
    CHECK(blocks_hold(p, a, 1) && blocks_hold(p, b, 2));
    pool_ok(p);

    /* Per-position stamps survive a second round trip too. */
    write_seq(p, a, 0, 500);
    CHECK(pkv_swap_out(p, a) == 0 && pkv_swap_in(p, a) == 0);
    CHECK(seq_has(p, a, 0, 13, 500));
    CHECK(pkv_seq_append(p, a, 3) == 0);

    /* A shared sequence swaps out a private copy; its partner keeps the
     * device blocks. */
    int c = pkv_seq_fork(p, b);
    CHECK(pkv_swap_out(p, c) == 0);
    CHECK(pkv_n_free(p, PKV_DEVICE) == 2 && pkv_n_free(p, PKV_CPU) == 6);
    CHECK(blocks_hold(p, c, 2) && blocks_hold(p, b, 2));
    pool_ok(p);
    CHECK(pkv_swap_in(p, c) == 0);
    CHECK(pkv_n_free(p, PKV_DEVICE) == 0 && pkv_n_free(p, PKV_CPU) == 8);
    CHECK(blocks_hold(p, c, 2));
    pool_ok(p);

    pkv_stats st;
    pkv_get_stats(p, &st);
    CHECK(st.swaps_out == 3 && st.swaps_in == 3);
    CHECK(st.total[PKV_DEVICE] == 8 && st.total[PKV_CPU] == 8);
    CHECK(st.free[PKV_DEVICE] == 0 && st.free[PKV_CPU] == 8);
    pkv_free(p);
    if (swap_path) CHECKF(access(swap_path, F_OK) != 0, "swap file %s left behind", swap_path);
}

static void test_swap_roundtrips_bytes_in_ram(void) { swap_roundtrip(NULL); }

static void test_swap_roundtrips_bytes_in_a_file(void) {
    char path[] = "/tmp/test_paged_kv_swap_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    swap_roundtrip(path);
    unlink(path); /* in case the pool did not get that far */
}

static void test_swap_file_errors_name_the_path(void) {
    pkv_config c = {1, 4, 4, 4, 4, KV_F32, "/nonexistent-dir-for-pkv/swap", 0, 0};
    pkv_pool *p = (pkv_pool *)1;
    char err[256] = "";
    CHECK(pkv_create(&c, &p, err, sizeof err) == PKV_EIO && p == NULL);
    CHECKF(strstr(err, "/nonexistent-dir-for-pkv/swap") && strstr(err, "No such file"), "%s", err);
    c.swap_path = "/tmp";
    CHECK(pkv_create(&c, &p, err, sizeof err) == PKV_EIO && p == NULL);
    CHECKF(strstr(err, "/tmp"), "%s", err);
}

static void test_swap_enomem_leaves_state_unchanged(void) {
    pkv_pool *p = make_pool(1, 4, 4, 8, 2, KV_F32, NULL);
    if (!p) return;
    int a = pkv_seq_new(p), b = pkv_seq_new(p), e = pkv_seq_new(p);
    CHECK(pkv_seq_append(p, a, 12) == 0 && pkv_seq_append(p, b, 5) == 0);
    write_seq(p, a, 0, 100);
    int seqs[3] = {a, b, e};
    snapshot s0;
    snap(p, seqs, 3, &s0);
    CHECK(pkv_swap_out(p, a) == PKV_ENOMEM);
    CHECK(same_snap(p, seqs, 3, &s0));
    CHECK(pkv_swap_out(p, b) == 0); /* 2 blocks: exactly fits */
    CHECK(pkv_n_free(p, PKV_CPU) == 0);
    CHECK(pkv_swap_out(p, e) == 0); /* empty: moves no blocks */
    CHECK(pkv_seq_tier(p, e) == PKV_CPU);
    CHECK(pkv_swap_in(p, e) == 0);
    pool_ok(p);

    /* Swap-in without device room. */
    int f = pkv_seq_new(p);
    CHECK(pkv_seq_append(p, f, 16) == 0); /* device now 8 - 3 - 4 = 1 free */
    CHECK(pkv_n_free(p, PKV_DEVICE) == 1);
    CHECK(pkv_blocks_needed(p, b, 0) == 2);
    snap(p, seqs, 3, &s0);
    CHECK(pkv_swap_in(p, b) == PKV_ENOMEM);
    CHECK(same_snap(p, seqs, 3, &s0));
    pkv_seq_free(p, f);
    CHECK(pkv_swap_in(p, b) == 0);
    CHECK(seq_has(p, a, 0, 12, 100));
    pool_ok(p);
    pkv_free(p);

    /* No swap tier at all. */
    p = make_pool(1, 4, 4, 4, 0, KV_F32, NULL);
    if (!p) return;
    a = pkv_seq_new(p);
    CHECK(pkv_seq_append(p, a, 1) == 0);
    CHECK(pkv_swap_out(p, a) == PKV_ENOMEM && pkv_seq_tier(p, a) == PKV_DEVICE);
    pool_ok(p);
    pkv_free(p);
}

static void test_handles_are_reused(void) {
    pkv_pool *p = make_pool(1, 4, 2, 64, 0, KV_F32, NULL);
    if (!p) return;
    int a = pkv_seq_new(p), b = pkv_seq_new(p), c = pkv_seq_new(p);
    CHECK(a >= 0 && b >= 0 && c >= 0 && a != b && b != c && a != c);
    CHECK(pkv_seq_append(p, b, 3) == 0);
    pkv_seq_free(p, b);
    CHECK(pkv_seq_len(p, b) == PKV_EINVAL);
    int b2 = pkv_seq_new(p);
    CHECK(b2 == b && pkv_seq_len(p, b2) == 0 && pkv_seq_n_blocks(p, b2) == 0);
    pkv_seq_free(p, a);
    int a2 = pkv_seq_fork(p, c);
    CHECK(a2 == a);
    pool_ok(p);

    /* Many at once (the handle array grows), then all again: no new ids. */
    int h[100], max_h = -1;
    pkv_seq_free(p, a2);
    pkv_seq_free(p, b2);
    pkv_seq_free(p, c);
    for (int i = 0; i < 100; i++) {
        h[i] = pkv_seq_new(p);
        CHECK(h[i] >= 0);
        if (h[i] > max_h) max_h = h[i];
    }
    CHECK(max_h == 99);
    for (int i = 0; i < 100; i += 2) pkv_seq_free(p, h[i]);
    pool_ok(p);
    for (int i = 0; i < 50; i++) CHECK(pkv_seq_new(p) <= 99);
    pool_ok(p);
    pkv_free(p);
}

static void test_invalid_handles_and_arguments_are_rejected(void) {
    pkv_config bad[] = {
        {0, 4, 4, 4, 0, KV_F32, NULL, 0, 0},
        {1, 0, 4, 4, 0, KV_F32, NULL, 0, 0},
        {1, 4, 0, 4, 0, KV_F32, NULL, 0, 0},
        {1, 4, 4, 0, 0, KV_F32, NULL, 0, 0},
        {1, 4, 4, 4, -1, KV_F32, NULL, 0, 0},
        {1, 4, 4, 4, 0, (kv_dtype)7, NULL, 0, 0},
        {1, 4, 1 << 20, 1 << 12, 0, KV_F32, NULL, 0, 0}, /* slots overflow int32 */
        {INT_MAX, INT_MAX, 1 << 10, 1 << 20, 0, KV_F32, NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pkv_pool *q = NULL;
        char err[256] = "";
        CHECKF(pkv_create(&bad[i], &q, err, sizeof err) == PKV_EINVAL && !q && err[0], "config %zu",
               i);
    }
    pkv_pool *p = make_pool(1, 4, 4, 4, 2, KV_F32, NULL);
    if (!p) return;
    int a = pkv_seq_new(p);
    CHECK(pkv_seq_append(p, a, 5) == 0);
    int dead = pkv_seq_new(p);
    pkv_seq_free(p, dead);
    int handles[] = {-1, dead, 1000, INT_MAX, INT_MIN};
    for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++) {
        int h = handles[i];
        int n = 123;
        CHECK(pkv_seq_len(p, h) == PKV_EINVAL);
        CHECK(pkv_seq_n_blocks(p, h) == PKV_EINVAL);
        CHECK(pkv_blocks_needed(p, h, 1) == PKV_EINVAL);
        CHECK(pkv_seq_append(p, h, 1) == PKV_EINVAL);
        CHECK(pkv_seq_truncate(p, h, 0) == PKV_EINVAL);
        CHECK(pkv_seq_fork(p, h) == PKV_EINVAL);
        CHECK(pkv_swap_out(p, h) == PKV_EINVAL);
        CHECK(pkv_swap_in(p, h) == PKV_EINVAL);
        CHECK(pkv_seq_slot(p, h, 0) == -1);
        CHECK(pkv_seq_block_table(p, h, &n) == NULL && n == 0);
        CHECK(pkv_seq_tier(p, h) == PKV_DEVICE);
        pkv_seq_free(p, h); /* ignored */
    }
    CHECK(pkv_seq_append(p, a, -1) == PKV_EINVAL);
    CHECK(pkv_blocks_needed(p, a, -1) == PKV_EINVAL);
    CHECK(pkv_seq_append(p, a, INT_MAX) == PKV_EINVAL); /* length overflow */
    CHECK(pkv_blocks_needed(p, a, INT_MAX) == PKV_EINVAL);
    CHECK(pkv_seq_append(p, a, INT_MAX - 5) == PKV_ENOMEM);
    CHECK(pkv_n_total(p, (pkv_tier)2) == PKV_EINVAL && pkv_n_free(p, (pkv_tier)-1) == PKV_EINVAL);
    CHECK(pkv_seq_len(p, a) == 5 && pkv_n_free(p, PKV_DEVICE) == 2);
    pool_ok(p);
    pkv_free(p);
    pkv_free(NULL);
}

static void test_check_detects_a_corrupted_table(void) {
    pkv_pool *p = make_pool(1, 4, 4, 4, 0, KV_F32, NULL);
    if (!p) return;
    int a = pkv_seq_new(p), b = pkv_seq_new(p);
    CHECK(pkv_seq_append(p, a, 4) == 0 && pkv_seq_append(p, b, 4) == 0);
    int nb;
    int32_t *tb = (int32_t *)pkv_seq_block_table(p, b, &nb); /* simulate a bug */
    const int32_t *ta = pkv_seq_block_table(p, a, &nb);
    int32_t saved = tb[0];
    tb[0] = ta[0];
    char err[256] = "";
    CHECK(pkv_check(p, err, sizeof err) == PKV_EINVAL);
    CHECKF(strstr(err, "ref count") != NULL, "%s", err);
    tb[0] = 99;
    CHECK(pkv_check(p, err, sizeof err) == PKV_EINVAL);
    tb[0] = saved;
    pool_ok(p);
    pkv_free(p);
}

/* ---- randomized run against a shadow model ---- */

typedef struct {
    int live;
    pkv_tier tier;
    int len, cap;
    uint32_t *stamp; /* data expected at each position */
} shadow_seq;

#define MAX_LIVE 16
#define MAX_HANDLES 64

static uint32_t rnd(uint64_t *st) {
    *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*st >> 33);
}
static int rnd_below(uint64_t *st, int n) { return n > 0 ? (int)(rnd(st) % (uint32_t)n) : 0; }

static int pick_live(uint64_t *rng, const shadow_seq *sh, int n_live) {
    if (n_live == 0) return -1;
    int k = rnd_below(rng, n_live);
    for (int h = 0; h < MAX_HANDLES; h++)
        if (sh[h].live && k-- == 0) return h;
    return -1;
}

static void shadow_reserve(shadow_seq *s, int n) {
    if (n <= s->cap) return;
    int cap = s->cap ? s->cap : 16;
    while (cap < n) cap *= 2;
    s->stamp = realloc(s->stamp, (size_t)cap * sizeof *s->stamp);
    s->cap = cap;
}

static int verify_pos(pkv_pool *p, const shadow_seq *sh, int h, int pos) {
    int32_t slot = pkv_seq_slot(p, h, pos);
    return slot >= 0 && slot_has(p, sh[h].tier, slot, sh[h].stamp[pos]);
}

typedef struct {
    long ops, enomem_append, enomem_swap_out, enomem_swap_in, cow, swaps;
} run_counts;

/* Returns 0 when every check passed. */
static int random_run(uint64_t seed, int n_ops, const char *swap_path, run_counts *rc_out) {
    uint64_t rng_state = seed * 0x9E3779B97F4A7C15ULL + 1, *rng = &rng_state;
    int bs_choices[] = {1, 2, 3, 4, 7, 16};
    int bs = bs_choices[rnd_below(rng, 6)];
    int nb = 8 + rnd_below(rng, 120), nb_cpu = rnd_below(rng, 8) == 0 ? 0 : 4 + rnd_below(rng, 60);
    int max_live = 2 + rnd_below(rng, MAX_LIVE - 1); /* few long or many short sequences */
    int n_layer = 1 + rnd_below(rng, 3), kv_dim = 2 + rnd_below(rng, 6);
    kv_dtype dt = rnd_below(rng, 2) ? KV_F16 : KV_F32;
    pkv_pool *p = make_pool(n_layer, kv_dim, bs, nb, nb_cpu, dt, nb_cpu ? swap_path : NULL);
    if (!p) return 1;
    shadow_seq sh[MAX_HANDLES];
    memset(sh, 0, sizeof sh);
    int n_live = 0, peak_live = 0, failed = 0;
    uint32_t next_stamp = 1;
    long enomem_append = 0, enomem_out = 0, enomem_in = 0;
    char err[256];
#define RCHECK(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            CHECKF(cond, __VA_ARGS__);                                                             \
            failed = 1;                                                                            \
        }                                                                                          \
    } while (0)

    for (int op = 0; op < n_ops && !failed; op++) {
        int kind = rnd_below(rng, 100);
        int h = pick_live(rng, sh, n_live);
        if (kind < 6 || h < 0) { /* new */
            if (n_live >= max_live) continue;
            int s = pkv_seq_new(p);
            RCHECK(s >= 0 && s < MAX_HANDLES && !sh[s].live, "seed %llu op %d: new -> %d",
                   (unsigned long long)seed, op, s);
            if (failed) break;
            sh[s].live = 1;
            sh[s].tier = PKV_DEVICE;
            sh[s].len = 0;
            h = s;
            n_live++;
        } else if (kind < 50) { /* append */
            /* Mostly decode steps, sometimes a prefill chunk, rarely nothing. */
            int n = rnd_below(rng, 8) == 0
                        ? 0
                        : 1 + rnd_below(rng, rnd_below(rng, 4) == 0 ? 4 * bs : 2);
            int need = pkv_blocks_needed(p, h, n);
            int free0 = pkv_n_free(p, PKV_DEVICE);
            int nb0 = pkv_seq_n_blocks(p, h);
            int rc = pkv_seq_append(p, h, n);
            if (sh[h].tier == PKV_CPU) {
                RCHECK(rc == PKV_ESTATE && need == div_up(sh[h].len + n, bs),
                       "seed %llu op %d: append to swapped seq rc %d need %d",
                       (unsigned long long)seed, op, rc, need);
            } else if (need > free0) {
                enomem_append++;
                RCHECK(rc == PKV_ENOMEM && pkv_n_free(p, PKV_DEVICE) == free0 &&
                           pkv_seq_n_blocks(p, h) == nb0,
                       "seed %llu op %d: append %d (need %d, free %d) rc %d",
                       (unsigned long long)seed, op, n, need, free0, rc);
            } else {
                RCHECK(rc == 0 && free0 - pkv_n_free(p, PKV_DEVICE) == need,
                       "seed %llu op %d: append %d (need %d, free %d) rc %d, took %d",
                       (unsigned long long)seed, op, n, need, free0, rc,
                       free0 - pkv_n_free(p, PKV_DEVICE));
                if (rc == 0) {
                    shadow_reserve(&sh[h], sh[h].len + n);
                    for (int i = sh[h].len; i < sh[h].len + n; i++) {
                        sh[h].stamp[i] = next_stamp++;
                        write_slot(p, PKV_DEVICE, pkv_seq_slot(p, h, i), sh[h].stamp[i]);
                    }
                    sh[h].len += n;
                }
            }
        } else if (kind < 56) { /* fork */
            if (n_live >= max_live) continue;
            int c = pkv_seq_fork(p, h);
            RCHECK(c >= 0 && c < MAX_HANDLES && !sh[c].live, "seed %llu op %d: fork -> %d",
                   (unsigned long long)seed, op, c);
            if (failed) break;
            sh[c].live = 1;
            sh[c].tier = sh[h].tier;
            sh[c].len = sh[h].len;
            shadow_reserve(&sh[c], sh[h].len);
            if (sh[h].len) memcpy(sh[c].stamp, sh[h].stamp, (size_t)sh[h].len * 4);
            n_live++;
            h = c;
        } else if (kind < 62) { /* truncate */
            /* Mostly drop a few tokens (rejected speculation), sometimes many. */
            int n = sh[h].len - rnd_below(rng, 2 * bs + 1);
            if (rnd_below(rng, 4) == 0) n = rnd_below(rng, sh[h].len + 1);
            if (n < 0) n = 0;
            RCHECK(pkv_seq_truncate(p, h, n) == 0, "truncate");
            sh[h].len = n;
            RCHECK(pkv_seq_truncate(p, h, n + 1) == PKV_EINVAL, "truncate past end");
        } else if (kind < 68) { /* free */
            pkv_seq_free(p, h);
            sh[h].live = 0;
            n_live--;
            RCHECK(pkv_seq_len(p, h) == PKV_EINVAL, "freed handle still valid");
            h = -1;
        } else if (kind < 81) { /* swap out */
            int nbk = pkv_seq_n_blocks(p, h), cfree = pkv_n_free(p, PKV_CPU);
            int rc = pkv_swap_out(p, h);
            if (sh[h].tier == PKV_CPU) {
                RCHECK(rc == PKV_ESTATE, "swap out of swapped seq rc %d", rc);
            } else if (nbk > cfree) {
                enomem_out++;
                RCHECK(rc == PKV_ENOMEM && pkv_n_free(p, PKV_CPU) == cfree, "swap out rc %d", rc);
            } else {
                RCHECK(rc == 0 && cfree - pkv_n_free(p, PKV_CPU) == nbk, "swap out rc %d", rc);
                sh[h].tier = PKV_CPU;
            }
        } else if (kind < 95) { /* swap in */
            int nbk = pkv_seq_n_blocks(p, h), dfree = pkv_n_free(p, PKV_DEVICE);
            int need = pkv_blocks_needed(p, h, 0);
            int rc = pkv_swap_in(p, h);
            if (sh[h].tier == PKV_DEVICE) {
                RCHECK(rc == PKV_ESTATE, "swap in of device seq rc %d", rc);
            } else if (nbk > dfree) {
                enomem_in++;
                RCHECK(rc == PKV_ENOMEM && need == nbk && pkv_n_free(p, PKV_DEVICE) == dfree,
                       "swap in rc %d", rc);
            } else {
                RCHECK(rc == 0 && need == nbk && dfree - pkv_n_free(p, PKV_DEVICE) == nbk,
                       "swap in rc %d", rc);
                sh[h].tier = PKV_DEVICE;
            }
        } else { /* a handle that is not live */
            int bad =
                rnd_below(rng, 3) == 0 ? -1 - rnd_below(rng, 5) : rnd_below(rng, MAX_HANDLES + 8);
            if (bad >= 0 && bad < MAX_HANDLES && sh[bad].live) continue;
            RCHECK(pkv_seq_append(p, bad, 1) == PKV_EINVAL && pkv_seq_fork(p, bad) == PKV_EINVAL &&
                       pkv_swap_out(p, bad) == PKV_EINVAL && pkv_swap_in(p, bad) == PKV_EINVAL &&
                       pkv_seq_truncate(p, bad, 0) == PKV_EINVAL && pkv_seq_slot(p, bad, 0) == -1,
                   "bad handle %d accepted", bad);
            pkv_seq_free(p, bad);
            h = -1;
        }
        if (n_live > peak_live) peak_live = n_live;

        int rc = pkv_check(p, err, sizeof err);
        RCHECK(rc == 0, "seed %llu op %d (kind %d): %s", (unsigned long long)seed, op, kind, err);
        if (h >= 0) {
            RCHECK(pkv_seq_len(p, h) == sh[h].len && pkv_seq_tier(p, h) == sh[h].tier,
                   "seed %llu op %d: seq %d len %d/%d tier %d/%d", (unsigned long long)seed, op, h,
                   pkv_seq_len(p, h), sh[h].len, (int)pkv_seq_tier(p, h), (int)sh[h].tier);
            if (sh[h].len > 0)
                RCHECK(verify_pos(p, sh, h, sh[h].len - 1) && verify_pos(p, sh, h, 0) &&
                           verify_pos(p, sh, h, rnd_below(rng, sh[h].len)),
                       "seed %llu op %d: data of seq %d", (unsigned long long)seed, op, h);
        }
        /* Handles are recycled: never more ids than sequences ever alive at once. */
        if (op % 256 == 0 || op == n_ops - 1) {
            int full = op % 4096 == 0 || op == n_ops - 1;
            for (int s = 0; s < MAX_HANDLES && !failed; s++) {
                if (!sh[s].live) continue;
                RCHECK(s < peak_live, "handle %d with peak %d live", s, peak_live);
                RCHECK(pkv_seq_len(p, s) == sh[s].len && pkv_seq_tier(p, s) == sh[s].tier,
                       "seed %llu op %d: seq %d shape", (unsigned long long)seed, op, s);
                for (int i = 0; i < sh[s].len && !failed; i++)
                    if (full || rnd_below(rng, 8) == 0)
                        RCHECK(verify_pos(p, sh, s, i), "seed %llu op %d: seq %d pos %d data",
                               (unsigned long long)seed, op, s, i);
            }
        }
    }
#undef RCHECK
    pkv_stats st;
    pkv_get_stats(p, &st);
    for (int s = 0; s < MAX_HANDLES; s++) {
        if (sh[s].live) pkv_seq_free(p, s);
        free(sh[s].stamp);
    }
    CHECK(pool_ok(p));
    CHECK(pkv_n_free(p, PKV_DEVICE) == nb && pkv_n_free(p, PKV_CPU) == nb_cpu);
    rc_out->ops += n_ops;
    rc_out->enomem_append += enomem_append;
    rc_out->enomem_swap_out += enomem_out;
    rc_out->enomem_swap_in += enomem_in;
    rc_out->cow += st.blocks_copied_cow;
    rc_out->swaps += st.swaps_out + st.swaps_in;
    pkv_free(p);
    return failed;
}

static void test_random_operations_keep_invariants(void) {
    /* ~0.3 s in Release, a few seconds under ASan: no need to scale down. */
    const int n_seeds = 32, ops_per_seed = 25000;
    char path[] = "/tmp/test_paged_kv_rand_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    run_counts rc = {0};
    clock_t t0 = clock();
    for (int s = 1; s <= n_seeds; s++) {
        /* Odd seeds put the swap tier in a file. */
        int failed = random_run((uint64_t)s, ops_per_seed, (s & 1) && fd >= 0 ? path : NULL, &rc);
        CHECKF(!failed, "seed %d", s);
    }
    unlink(path);
    printf("random: %ld ops in %.2f s; ENOMEM append %ld, swap out %ld, swap in %ld; "
           "%ld CoW copies, %ld swaps\n",
           rc.ops, (double)(clock() - t0) / CLOCKS_PER_SEC, rc.enomem_append, rc.enomem_swap_out,
           rc.enomem_swap_in, rc.cow, rc.swaps);
    /* The run must actually reach the paths it is meant to exercise. */
    CHECK(rc.enomem_append > 0 && rc.enomem_swap_out > 0 && rc.enomem_swap_in > 0);
    CHECK(rc.cow > 0 && rc.swaps > 0);
}

/* ---- prefix cache ---- */

static pkv_pool *make_cached_pool(int bs, int nb, int nb_cpu) {
    pkv_config c = {1, 4, bs, nb, nb_cpu, KV_F32, NULL, 1, 42};
    pkv_pool *p = NULL;
    char err[256];
    int rc = pkv_create(&c, &p, err, sizeof err);
    CHECKF(rc == 0 && p, "pkv_create: %d %s", rc, err);
    return rc == 0 ? p : NULL;
}

/* A device sequence of n tokens whose KV counts as computed and registered. */
static int computed_seq(pkv_pool *p, const int32_t *tok, int n, int n_multi) {
    int s = pkv_seq_new(p);
    CHECK(s >= 0 && pkv_seq_append(p, s, n) == 0);
    pkv_seq_cache_computed(p, s, tok, n, n_multi);
    return s;
}

static void test_prefix_lookup_finds_computed_full_blocks_only(void) {
    pkv_pool *p = make_cached_pool(4, 16, 0);
    if (!p) return;
    int32_t tok[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    int a = pkv_seq_new(p), idle = -1;
    CHECK(pkv_seq_append(p, a, 10) == 0);
    /* nothing is registered before its KV is computed */
    CHECK(pkv_prefix_lookup(p, tok, 10, 0, &idle) == 0 && idle == 0);
    pkv_seq_cache_computed(p, a, tok, 6, 0); /* one full block computed */
    CHECK(pkv_prefix_lookup(p, tok, 12, 0, NULL) == 1);
    pkv_seq_cache_computed(p, a, tok, 10, 0); /* the partial third block stays out */
    CHECK(pool_ok(p));
    CHECK(pkv_prefix_lookup(p, tok, 12, 0, &idle) == 2 && idle == 0);
    /* never the whole prompt: one token is left to compute */
    CHECK(pkv_prefix_lookup(p, tok, 8, 0, NULL) == 1);
    CHECK(pkv_prefix_lookup(p, tok, 9, 0, NULL) == 2);
    CHECK(pkv_prefix_lookup(p, tok, 1, 0, NULL) == 0);
    /* the shape split, the first block or a later one differing: no match past it */
    CHECK(pkv_prefix_lookup(p, tok, 12, 6, NULL) == 0);
    int32_t other[12];
    memcpy(other, tok, sizeof tok);
    other[5] = 99;
    CHECK(pkv_prefix_lookup(p, other, 12, 0, NULL) == 1);
    other[0] = 99;
    CHECK(pkv_prefix_lookup(p, other, 12, 0, NULL) == 0);

    /* a new sequence takes the blocks by reference: no blocks spent */
    int free0 = pkv_n_free(p, PKV_DEVICE), hit = -1;
    int b = pkv_seq_new_prefix(p, tok, 11, 0, &hit);
    CHECK(b >= 0 && hit == 8 && pkv_seq_len(p, b) == 8 && pkv_n_free(p, PKV_DEVICE) == free0);
    CHECK(pkv_seq_slot(p, b, 0) == pkv_seq_slot(p, a, 0));
    CHECK(pkv_seq_slot(p, b, 7) == pkv_seq_slot(p, a, 7));
    CHECK(pool_ok(p));
    pkv_stats st;
    pkv_get_stats(p, &st);
    CHECK(st.prefix_queried_tokens == 11 && st.prefix_hit_tokens == 8 && st.cached == 0);
    /* growing b past the shared full blocks takes a fresh block */
    CHECK(pkv_seq_append(p, b, 3) == 0 && pkv_seq_slot(p, b, 8) != pkv_seq_slot(p, a, 8));
    pkv_seq_free(p, a);
    pkv_seq_free(p, b);
    CHECK(pool_ok(p));
    CHECK(pkv_n_cached(p) == 2 && pkv_n_free(p, PKV_DEVICE) == 16);
    pkv_free(p);
}

static void test_prefix_cache_evicts_least_recently_used(void) {
    pkv_pool *p = make_cached_pool(4, 4, 0);
    if (!p) return;
    int32_t ta[9] = {1, 2, 3, 4, 5, 6, 7, 8, 0}, tb[9] = {11, 12, 13, 14, 15, 16, 17, 18, 0};
    int a = computed_seq(p, ta, 8, 0), b = computed_seq(p, tb, 8, 0);
    pkv_seq_free(p, a); /* LRU: a's second block, then its first */
    pkv_seq_free(p, b); /* then b's second, b's first */
    CHECK(pool_ok(p));
    CHECK(pkv_n_cached(p) == 4 && pkv_n_free(p, PKV_DEVICE) == 4);
    int idle = 0;
    CHECK(pkv_prefix_lookup(p, ta, 9, 0, &idle) == 2 && idle == 2);
    /* allocation evicts the least recently used: a chain's tail first */
    int c = pkv_seq_new(p);
    CHECK(pkv_seq_append(p, c, 4) == 0);
    CHECK(pool_ok(p));
    CHECK(pkv_prefix_lookup(p, ta, 9, 0, NULL) == 1 && pkv_prefix_lookup(p, tb, 9, 0, NULL) == 2);
    /* taking b's blocks makes them used (not evictable); the next
     * allocation evicts a's first block */
    int hit = 0, b2 = pkv_seq_new_prefix(p, tb, 9, 0, &hit);
    CHECK(b2 >= 0 && hit == 8 && pkv_n_cached(p) == 1 && pkv_n_free(p, PKV_DEVICE) == 1);
    CHECK(pkv_seq_append(p, c, 4) == 0);
    CHECK(pool_ok(p));
    CHECK(pkv_prefix_lookup(p, ta, 9, 0, NULL) == 0 && pkv_n_cached(p) == 0);
    CHECK(pkv_n_free(p, PKV_DEVICE) == 0 && pkv_seq_append(p, c, 1) == PKV_ENOMEM);
    pkv_stats st;
    pkv_get_stats(p, &st);
    CHECK(st.prefix_evictions == 2);
    /* b's blocks freed again become cached, most recently used last */
    pkv_seq_free(p, b2);
    pkv_seq_free(p, c);
    CHECK(pool_ok(p));
    CHECK(pkv_n_cached(p) == 2 && pkv_n_free(p, PKV_DEVICE) == 4);
    pkv_free(p);
}

static void test_prefix_cache_rewrites_never_change_a_registered_block(void) {
    pkv_pool *p = make_cached_pool(4, 8, 0);
    if (!p) return;
    int32_t tok[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    /* private: truncating into a registered block unregisters it */
    int a = computed_seq(p, tok, 8, 0);
    CHECK(pkv_seq_truncate(p, a, 6) == 0);
    CHECK(pool_ok(p));
    CHECK(pkv_prefix_lookup(p, tok, 9, 0, NULL) == 1);
    pkv_seq_free(p, a);
    /* shared: the writer copies the block first, the cached one stays */
    a = computed_seq(p, tok, 8, 0);
    int hit = 0, b = pkv_seq_new_prefix(p, tok, 9, 0, &hit);
    CHECK(b >= 0 && hit == 8);
    int32_t shared = pkv_seq_slot(p, b, 4);
    CHECK(pkv_seq_truncate(p, a, 6) == 0 && pkv_seq_append(p, a, 2) == 0);
    CHECK(pkv_seq_slot(p, a, 4) != shared && pkv_seq_slot(p, b, 4) == shared);
    CHECK(pool_ok(p));
    CHECK(pkv_prefix_lookup(p, tok, 9, 0, NULL) == 2);
    pkv_seq_free(p, a);
    pkv_seq_free(p, b);
    CHECK(pool_ok(p));
    pkv_free(p);
}

static void test_prefix_cache_and_swap(void) {
    pkv_pool *p = make_cached_pool(4, 4, 4);
    if (!p) return;
    int32_t tok[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    int a = computed_seq(p, tok, 8, 0);
    /* swapped out, the blocks stay cached on the device (the CPU tier caches nothing) */
    CHECK(pkv_swap_out(p, a) == 0);
    CHECK(pool_ok(p));
    CHECK(pkv_n_cached(p) == 2 && pkv_n_free(p, PKV_DEVICE) == 4 && pkv_n_free(p, PKV_CPU) == 2);
    int hit = 0, b = pkv_seq_new_prefix(p, tok, 9, 0, &hit);
    CHECK(b >= 0 && hit == 8 && pkv_n_free(p, PKV_DEVICE) == 2);
    CHECK(pkv_swap_in(p, a) == 0); /* fresh device blocks */
    CHECK(pkv_n_free(p, PKV_DEVICE) == 0 && pkv_seq_slot(p, a, 0) != pkv_seq_slot(p, b, 0));
    /* its copies duplicate registered blocks: registering them again keeps one of each */
    pkv_seq_cache_computed(p, a, tok, 8, 0);
    CHECK(pool_ok(p));
    pkv_seq_free(p, b);
    pkv_seq_free(p, a);
    CHECK(pool_ok(p));
    CHECK(pkv_n_cached(p) == 2 && pkv_n_free(p, PKV_DEVICE) == 4);
    pkv_free(p);
}

/* Prefix-cache random run: the KV of position i is a function of tokens
 * 0..i (a prefix stamp), so any block a lookup hands out must hold exactly
 * the stamps of the new sequence's own tokens. Tokens come from a few
 * documents with random edits, so prefixes are shared and diverge. */
#define PDOC 48
static uint32_t prefix_stamp(const int32_t *tok, int i) {
    uint32_t h = 2166136261u;
    for (int k = 0; k <= i; k++) h = (h ^ (uint32_t)tok[k]) * 16777619u;
    return h | 1;
}

typedef struct {
    int live;
    pkv_tier tier;
    int len;
    int32_t tok[PDOC];
} pshadow;

static int prefix_random_run(uint64_t seed, int n_ops, long *hits) {
    uint64_t rng_state = seed * 0x9E3779B97F4A7C15ULL + 7, *rng = &rng_state;
    int bs = 1 + rnd_below(rng, 5), nb = 6 + rnd_below(rng, 40), nb_cpu = rnd_below(rng, 24);
    int n_multi = rnd_below(rng, 3) * 5;
    pkv_pool *p = make_cached_pool(bs, nb, nb_cpu);
    if (!p) return 1;
    int32_t docs[3][PDOC];
    for (int d = 0; d < 3; d++)
        for (int i = 0; i < PDOC; i++) docs[d][i] = (int32_t)rnd_below(rng, 4 + d);
    pshadow sh[MAX_HANDLES];
    memset(sh, 0, sizeof sh);
    int n_live = 0, failed = 0;
    char err[256];
    for (int op = 0; op < n_ops && !failed; op++) {
        int kind = rnd_below(rng, 100), h = -1;
        for (int k = rnd_below(rng, MAX_HANDLES), i = 0; i < MAX_HANDLES && h < 0; i++)
            if (sh[(k + i) % MAX_HANDLES].live) h = (k + i) % MAX_HANDLES;
        if (kind < 20 || h < 0) { /* a new sequence on its cached prefix */
            if (n_live >= 12) continue;
            int32_t tok[PDOC];
            memcpy(tok, docs[rnd_below(rng, 3)], sizeof tok);
            if (rnd_below(rng, 3) == 0) tok[rnd_below(rng, PDOC)] = 9;
            int n = 1 + rnd_below(rng, PDOC), idle = 0, hit = -1;
            int want = pkv_prefix_lookup(p, tok, n, n_multi, &idle);
            int free0 = pkv_n_free(p, PKV_DEVICE);
            int s = pkv_seq_new_prefix(p, tok, n, n_multi, &hit);
            CHECKF(s >= 0 && s < MAX_HANDLES && hit == want * bs && hit < n &&
                       pkv_n_free(p, PKV_DEVICE) == free0 - idle,
                   "seed %llu op %d: new_prefix %d hit %d want %d", (unsigned long long)seed, op, s,
                   hit, want);
            if (s < 0 || s >= MAX_HANDLES) return 1;
            for (int i = 0; i < hit && !failed; i++)
                if (!slot_has(p, PKV_DEVICE, pkv_seq_slot(p, s, i), prefix_stamp(tok, i))) {
                    CHECKF(0, "seed %llu op %d: cached position %d holds other KV",
                           (unsigned long long)seed, op, i);
                    failed = 1;
                }
            *hits += hit;
            sh[s].live = 1;
            sh[s].tier = PKV_DEVICE;
            sh[s].len = hit;
            memcpy(sh[s].tok, tok, sizeof tok);
            n_live++;
        } else if (kind < 60) { /* compute more tokens, then register them */
            int n = 1 + rnd_below(rng, 2 * bs);
            if (sh[h].tier != PKV_DEVICE || sh[h].len + n > PDOC) continue;
            if (pkv_seq_append(p, h, n) != 0) continue;
            for (int i = sh[h].len; i < sh[h].len + n; i++)
                write_slot(p, PKV_DEVICE, pkv_seq_slot(p, h, i), prefix_stamp(sh[h].tok, i));
            sh[h].len += n;
            pkv_seq_cache_computed(p, h, sh[h].tok, sh[h].len, n_multi);
        } else if (kind < 68) { /* rewrite a tail with other tokens */
            int n = rnd_below(rng, sh[h].len + 1);
            CHECK(pkv_seq_truncate(p, h, n) == 0);
            sh[h].len = n;
            for (int i = n; i < PDOC; i++) sh[h].tok[i] = (int32_t)rnd_below(rng, 6);
        } else if (kind < 74) {
            if (n_live >= 12) continue;
            int c = pkv_seq_fork(p, h);
            CHECK(c >= 0 && c < MAX_HANDLES);
            if (c < 0 || c >= MAX_HANDLES) return 1;
            sh[c] = sh[h];
            n_live++;
        } else if (kind < 86) {
            pkv_seq_free(p, h);
            sh[h].live = 0;
            n_live--;
        } else if (kind < 93) {
            if (pkv_swap_out(p, h) == 0) sh[h].tier = PKV_CPU;
        } else {
            if (pkv_swap_in(p, h) == 0) sh[h].tier = PKV_DEVICE;
        }
        if (pkv_check(p, err, sizeof err) != 0) {
            CHECKF(0, "seed %llu op %d (kind %d): %s", (unsigned long long)seed, op, kind, err);
            failed = 1;
        }
        for (int s = 0; s < MAX_HANDLES && !failed; s++)
            if (sh[s].live && sh[s].len > 0 &&
                !slot_has(p, sh[s].tier, pkv_seq_slot(p, s, sh[s].len - 1),
                          prefix_stamp(sh[s].tok, sh[s].len - 1))) {
                CHECKF(0, "seed %llu op %d: seq %d last position data", (unsigned long long)seed,
                       op, s);
                failed = 1;
            }
    }
    for (int s = 0; s < MAX_HANDLES; s++)
        if (sh[s].live) pkv_seq_free(p, s);
    CHECK(pool_ok(p));
    CHECK(pkv_n_free(p, PKV_DEVICE) == nb && pkv_n_free(p, PKV_CPU) == nb_cpu);
    pkv_free(p);
    return failed;
}

static void test_prefix_random_operations_share_only_equal_kv(void) {
    long hits = 0;
    for (int s = 1; s <= 24; s++)
        CHECKF(!prefix_random_run((uint64_t)s, 4000, &hits), "seed %d", s);
    printf("prefix random: %ld tokens found cached\n", hits);
    CHECK(hits > 0);
}

/* kv_block_bytes is the stride the pool really uses between blocks, for
 * both element types: what sizing and banners compute is what is allocated. */
static void test_block_bytes_is_the_pool_stride(void) {
    const kv_dtype types[2] = {KV_F16, KV_F32};
    for (int t = 0; t < 2; t++) {
        pkv_config cfg = {3, 24, 8, 4, 0, types[t], NULL, 0, 0};
        pkv_pool *p = NULL;
        char err[256];
        CHECKF(pkv_create(&cfg, &p, err, sizeof err) == PKV_OK, "%s", err);
        if (!p) continue;
        size_t want = kv_block_bytes(3, 24, 8, types[t]);
        CHECK(want == (size_t)3 * 2 * 8 * 24 * kv_dtype_size(types[t]));
        CHECK(pkv_block_bytes(p) == want);
        const kv_cache *kv = pkv_device_cache(p);
        CHECK(kv->block_bytes == want);
        /* slot block_size is the first row of block 1 */
        CHECK((size_t)((uint8_t *)kv_slot_ptr(kv, 0, 0, 8) - (uint8_t *)kv_slot_ptr(kv, 0, 0, 0)) ==
              want);
        pkv_free(p);
    }
    /* a budget of 1 MiB over 1000-byte blocks: whole blocks, at least one */
    CHECK(kv_blocks_in_budget(1.0, 1000) == 1048);
    CHECK(kv_blocks_in_budget(0.0001, 1 << 20) == 1);
}

int main(void) {
    test_block_bytes_is_the_pool_stride();
    test_append_grows_across_block_boundaries();
    test_slots_map_positions_to_blocks();
    test_enomem_leaves_state_unchanged();
    test_fork_copy_on_write_copies_the_filled_part();
    test_truncate_frees_uncovered_blocks();
    test_swap_roundtrips_bytes_in_ram();
    test_swap_roundtrips_bytes_in_a_file();
    test_swap_file_errors_name_the_path();
    test_swap_enomem_leaves_state_unchanged();
    test_handles_are_reused();
    test_invalid_handles_and_arguments_are_rejected();
    test_check_detects_a_corrupted_table();
    test_random_operations_keep_invariants();
    test_prefix_lookup_finds_computed_full_blocks_only();
    test_prefix_cache_evicts_least_recently_used();
    test_prefix_cache_rewrites_never_change_a_registered_block();
    test_prefix_cache_and_swap();
    test_prefix_random_operations_share_only_equal_kv();
    return tu_finish("test_paged_kv");
}
