/*
 * paged_kv.c - the block manager of paged_kv.h.
 *
 * Each tier is an array of blocks with a ref count per block and a stack of
 * free block ids, so allocating and freeing a block are O(1). A sequence is
 * a length plus a block table (block ids of its tier, grown geometrically);
 * sequence handles index an array of those and are recycled through a stack
 * of freed handles. The device tier's bytes live in a kv_cache (its own
 * kv_seq_* allocator is never used); the CPU tier's bytes are calloc'd or a
 * shared mapping of a swap file.
 *
 * Every mutating call checks everything that can fail (handles, tier, free
 * blocks, host allocations for tables and handles) before it changes any
 * state, so a failed call leaves the pool exactly as it was. See
 * docs/paged_kv.md for the design.
 */
#include "paged_kv/paged_kv.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    int total;
    int n_free;
    int32_t *free_list; /* stack of free block ids, [0, n_free) */
    int32_t *ref;       /* block-table entries pointing at each block */
    uint8_t *data;      /* total * block_bytes */
} pkv_tier_pool;

typedef struct {
    int live;
    pkv_tier tier;
    int len;      /* tokens */
    int n_blocks; /* == ceil(len / block_size) */
    int cap;      /* table capacity; kept when the handle is recycled */
    int32_t *table;
} pkv_seq;

struct pkv_pool {
    int block_size;
    size_t block_bytes;
    kv_cache *dev; /* device storage; tier[PKV_DEVICE].data aliases dev->data */
    pkv_tier_pool tier[2];
    char *swap_path;   /* file backing the CPU tier, or NULL (RAM) */
    size_t swap_bytes; /* length of its mapping */
    pkv_seq *seqs;     /* [0, n_seqs) handed out at least once */
    int n_seqs, cap_seqs;
    int32_t *free_handles; /* stack of recycled handles, capacity cap_seqs */
    int n_free_handles;
    long swaps_out, swaps_in, blocks_copied_cow;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int blocks_for(int len, int bs) { return len / bs + (len % bs != 0); }

static pkv_seq *seq_get(const pkv_pool *p, int h) {
    if (!p || h < 0 || h >= p->n_seqs || !p->seqs[h].live) return NULL;
    return &p->seqs[h];
}

static int32_t block_alloc(pkv_tier_pool *t) {
    int32_t b = t->free_list[--t->n_free];
    t->ref[b] = 1;
    return b;
}

static void block_release(pkv_tier_pool *t, int32_t b) {
    if (--t->ref[b] == 0) t->free_list[t->n_free++] = b;
}

static uint8_t *block_data(const pkv_pool *p, pkv_tier t, int32_t b) {
    return p->tier[t].data + (size_t)b * p->block_bytes;
}

/* Capacity for n entries; changes nothing observable. */
static int table_reserve(pkv_seq *s, int n) {
    if (n <= s->cap) return 0;
    int cap = s->cap > INT_MAX / 2 ? INT_MAX : s->cap * 2;
    if (cap < n) cap = n;
    if (cap < 4) cap = 4;
    int32_t *t = realloc(s->table, (size_t)cap * sizeof *t);
    if (!t) return PKV_ENOMEM;
    s->table = t;
    s->cap = cap;
    return 0;
}

/* Make sure handle_next() has a handle to give; changes nothing observable. */
static int handle_reserve(pkv_pool *p) {
    if (p->n_free_handles > 0 || p->n_seqs < p->cap_seqs) return 0;
    if (p->cap_seqs > INT_MAX / 2) return PKV_ENOMEM;
    int cap = p->cap_seqs ? p->cap_seqs * 2 : 16;
    pkv_seq *s = realloc(p->seqs, (size_t)cap * sizeof *s);
    if (!s) return PKV_ENOMEM;
    memset(s + p->cap_seqs, 0, (size_t)(cap - p->cap_seqs) * sizeof *s);
    p->seqs = s;
    int32_t *f = realloc(p->free_handles, (size_t)cap * sizeof *f);
    if (!f) return PKV_ENOMEM; /* the larger seqs array is harmless */
    p->free_handles = f;
    p->cap_seqs = cap;
    return 0;
}

/* The handle handle_take() will return (after handle_reserve). Recycled
 * handles go first, most recently freed first. */
static int handle_next(const pkv_pool *p) {
    return p->n_free_handles > 0 ? p->free_handles[p->n_free_handles - 1] : p->n_seqs;
}

static int handle_take(pkv_pool *p) {
    int h = p->n_free_handles > 0 ? p->free_handles[--p->n_free_handles] : p->n_seqs++;
    pkv_seq *s = &p->seqs[h];
    s->live = 1;
    s->tier = PKV_DEVICE;
    s->len = 0;
    s->n_blocks = 0;
    return h;
}

/* ---- pool ---- */

static int tier_init(pkv_tier_pool *t, int total) {
    t->total = total;
    t->n_free = total;
    if (total == 0) return 0;
    t->free_list = malloc((size_t)total * sizeof *t->free_list);
    t->ref = calloc((size_t)total, sizeof *t->ref);
    if (!t->free_list || !t->ref) return PKV_ENOMEM;
    /* Block 0 on top: a fresh pool hands out blocks in ascending order. */
    for (int i = 0; i < total; i++) t->free_list[i] = total - 1 - i;
    return 0;
}

/* Create, size and map the swap file. On failure nothing is left behind. */
static int swap_file_map(pkv_pool *p, const char *path, size_t bytes, char *err, size_t errlen) {
    if ((off_t)bytes < 0 || (size_t)(off_t)bytes != bytes) {
        set_err(err, errlen, "swap file %s: %zu bytes is too large", path, bytes);
        return PKV_EIO;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        set_err(err, errlen, "swap file %s: cannot create: %s", path, strerror(errno));
        return PKV_EIO;
    }
    const char *what = NULL;
    int e = 0;
    if (ftruncate(fd, (off_t)bytes) != 0) {
        what = "cannot size";
        e = errno;
    } else {
        /* Reserve the disk space now: a sparse file that later runs out of
         * space would kill the process with SIGBUS on a store into the
         * mapping. File systems without fallocate keep the sparse file. */
        int rc = posix_fallocate(fd, 0, (off_t)bytes);
        if (rc == ENOSPC || rc == EFBIG || rc == EIO) {
            what = "cannot reserve space";
            e = rc;
        }
    }
    void *m = MAP_FAILED;
    if (!what) {
        m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            what = "cannot map";
            e = errno;
        }
    }
    close(fd); /* the mapping keeps the file open */
    if (what) {
        set_err(err, errlen, "swap file %s: %s %zu bytes: %s", path, what, bytes, strerror(e));
        unlink(path);
        return PKV_EIO;
    }
    p->swap_path = strdup(path);
    if (!p->swap_path) {
        munmap(m, bytes);
        unlink(path);
        set_err(err, errlen, "out of memory");
        return PKV_ENOMEM;
    }
    p->tier[PKV_CPU].data = m;
    p->swap_bytes = bytes;
    return 0;
}

int pkv_create(const pkv_config *cfg, pkv_pool **out, char *err, size_t errlen) {
    if (!out) return PKV_EINVAL;
    *out = NULL;
    if (!cfg) {
        set_err(err, errlen, "no paged KV config");
        return PKV_EINVAL;
    }
    if (cfg->n_layer <= 0 || cfg->kv_dim <= 0 || cfg->block_size <= 0 || cfg->num_blocks <= 0 ||
        cfg->num_blocks_cpu < 0 || (cfg->dtype != KV_F32 && cfg->dtype != KV_F16)) {
        set_err(err, errlen,
                "invalid paged KV config (layers %d, kv_dim %d, block_size %d, blocks %d, "
                "cpu blocks %d, dtype %d)",
                cfg->n_layer, cfg->kv_dim, cfg->block_size, cfg->num_blocks, cfg->num_blocks_cpu,
                (int)cfg->dtype);
        return PKV_EINVAL;
    }
    /* Slots (block * block_size + offset) are int32; block bytes and tier
     * bytes must fit size_t. */
    int max_blocks = cfg->num_blocks > cfg->num_blocks_cpu ? cfg->num_blocks : cfg->num_blocks_cpu;
    size_t elt = kv_dtype_size(cfg->dtype);
    size_t row = (size_t)cfg->kv_dim * elt;
    size_t per_layer = (size_t)2 * (size_t)cfg->block_size;
    if ((int64_t)max_blocks * cfg->block_size > INT32_MAX || row / elt != (size_t)cfg->kv_dim ||
        per_layer > SIZE_MAX / row || (size_t)cfg->n_layer > SIZE_MAX / (per_layer * row) ||
        (size_t)max_blocks > SIZE_MAX / ((size_t)cfg->n_layer * per_layer * row)) {
        set_err(err, errlen, "paged KV pool too large (%d blocks of %d tokens)", max_blocks,
                cfg->block_size);
        return PKV_EINVAL;
    }

    pkv_pool *p = calloc(1, sizeof *p);
    if (!p) {
        set_err(err, errlen, "out of memory");
        return PKV_ENOMEM;
    }
    char kerr[256] = "";
    if (kv_cache_create(cfg->n_layer, cfg->kv_dim, cfg->block_size, cfg->num_blocks, cfg->dtype,
                        &p->dev, kerr, sizeof kerr) != 0) {
        set_err(err, errlen, "device tier: %s", kerr);
        free(p);
        return PKV_ENOMEM;
    }
    p->block_size = cfg->block_size;
    p->block_bytes = p->dev->block_bytes;
    int rc = tier_init(&p->tier[PKV_DEVICE], cfg->num_blocks);
    if (rc == 0) rc = tier_init(&p->tier[PKV_CPU], cfg->num_blocks_cpu);
    if (rc != 0) {
        set_err(err, errlen, "out of memory for block tables");
        pkv_free(p);
        return rc;
    }
    p->tier[PKV_DEVICE].data = p->dev->data;
    if (cfg->num_blocks_cpu > 0) {
        size_t bytes = (size_t)cfg->num_blocks_cpu * p->block_bytes;
        if (cfg->swap_path) {
            rc = swap_file_map(p, cfg->swap_path, bytes, err, errlen);
        } else {
            p->tier[PKV_CPU].data = calloc((size_t)cfg->num_blocks_cpu, p->block_bytes);
            if (!p->tier[PKV_CPU].data) {
                set_err(err, errlen, "out of memory for %d CPU KV blocks (%zu bytes)",
                        cfg->num_blocks_cpu, bytes);
                rc = PKV_ENOMEM;
            }
        }
        if (rc != 0) {
            pkv_free(p);
            return rc;
        }
    }
    *out = p;
    return 0;
}

void pkv_free(pkv_pool *p) {
    if (!p) return;
    for (int i = 0; i < p->n_seqs; i++) free(p->seqs[i].table);
    free(p->seqs);
    free(p->free_handles);
    for (int t = 0; t < 2; t++) {
        free(p->tier[t].free_list);
        free(p->tier[t].ref);
    }
    if (p->swap_path) {
        munmap(p->tier[PKV_CPU].data, p->swap_bytes);
        unlink(p->swap_path);
        free(p->swap_path);
    } else {
        free(p->tier[PKV_CPU].data);
    }
    kv_cache_free(p->dev);
    free(p);
}

kv_cache *pkv_device_cache(pkv_pool *p) { return p ? p->dev : NULL; }
size_t pkv_block_bytes(const pkv_pool *p) { return p ? p->block_bytes : 0; }
int pkv_block_size(const pkv_pool *p) { return p ? p->block_size : PKV_EINVAL; }

int pkv_n_total(const pkv_pool *p, pkv_tier t) {
    if (!p || (t != PKV_DEVICE && t != PKV_CPU)) return PKV_EINVAL;
    return p->tier[t].total;
}

int pkv_n_free(const pkv_pool *p, pkv_tier t) {
    if (!p || (t != PKV_DEVICE && t != PKV_CPU)) return PKV_EINVAL;
    return p->tier[t].n_free;
}

void *pkv_slot_ptr(const pkv_pool *p, pkv_tier t, int layer, int kind, int32_t slot) {
    if (!p || (t != PKV_DEVICE && t != PKV_CPU) || layer < 0 || layer >= p->dev->n_layer ||
        (kind != 0 && kind != 1) || slot < 0 || slot / p->block_size >= p->tier[t].total)
        return NULL;
    int32_t blk = slot / p->block_size, off = slot % p->block_size;
    size_t row = (size_t)p->dev->kv_dim * p->dev->elt_size;
    return block_data(p, t, blk) +
           (((size_t)layer * 2 + (size_t)kind) * (size_t)p->block_size + (size_t)off) * row;
}

/* ---- sequences ---- */

int pkv_seq_new(pkv_pool *p) {
    if (!p) return PKV_EINVAL;
    int rc = handle_reserve(p);
    if (rc != 0) return rc;
    return handle_take(p);
}

int pkv_blocks_needed(const pkv_pool *p, int seq, int n_new) {
    const pkv_seq *s = seq_get(p, seq);
    if (!s || n_new < 0 || n_new > INT_MAX - s->len) return PKV_EINVAL;
    int grown = blocks_for(s->len + n_new, p->block_size);
    if (s->tier == PKV_CPU) return grown; /* swap-in copies every block, none shared */
    int need = grown - s->n_blocks;
    /* Writing into a partial last block that another sequence also points
     * at requires a private copy first. */
    if (n_new > 0 && s->len % p->block_size != 0 &&
        p->tier[PKV_DEVICE].ref[s->table[s->n_blocks - 1]] > 1)
        need++;
    return need;
}

/* Copy the first `filled` token rows of every layer's K and V. */
static void copy_filled(const pkv_pool *p, uint8_t *dst, const uint8_t *src, int filled) {
    size_t row = (size_t)p->dev->kv_dim * p->dev->elt_size;
    size_t seg = (size_t)p->block_size * row;
    for (size_t i = 0; i < (size_t)p->dev->n_layer * 2; i++)
        memcpy(dst + i * seg, src + i * seg, (size_t)filled * row);
}

int pkv_seq_append(pkv_pool *p, int seq, int n_new) {
    pkv_seq *s = seq_get(p, seq);
    if (!s || n_new < 0 || n_new > INT_MAX - s->len) return PKV_EINVAL;
    if (s->tier != PKV_DEVICE) return PKV_ESTATE;
    pkv_tier_pool *t = &p->tier[PKV_DEVICE];
    int need = pkv_blocks_needed(p, seq, n_new);
    if (need > t->n_free) return PKV_ENOMEM;
    int grown = blocks_for(s->len + n_new, p->block_size);
    if (table_reserve(s, grown) != 0) return PKV_ENOMEM;

    int filled = s->len % p->block_size;
    if (n_new > 0 && filled != 0) {
        int32_t old = s->table[s->n_blocks - 1];
        if (t->ref[old] > 1) {
            int32_t b = block_alloc(t);
            copy_filled(p, block_data(p, PKV_DEVICE, b), block_data(p, PKV_DEVICE, old), filled);
            t->ref[old]--; /* still > 0: others keep it */
            s->table[s->n_blocks - 1] = b;
            p->blocks_copied_cow++;
        }
    }
    while (s->n_blocks < grown) s->table[s->n_blocks++] = block_alloc(t);
    s->len += n_new;
    return 0;
}

int pkv_seq_truncate(pkv_pool *p, int seq, int n) {
    pkv_seq *s = seq_get(p, seq);
    if (!s || n < 0 || n > s->len) return PKV_EINVAL;
    pkv_tier_pool *t = &p->tier[s->tier];
    int keep = blocks_for(n, p->block_size);
    while (s->n_blocks > keep) block_release(t, s->table[--s->n_blocks]);
    s->len = n;
    return 0;
}

int pkv_seq_len(const pkv_pool *p, int seq) {
    const pkv_seq *s = seq_get(p, seq);
    return s ? s->len : PKV_EINVAL;
}

pkv_tier pkv_seq_tier(const pkv_pool *p, int seq) {
    const pkv_seq *s = seq_get(p, seq);
    return s ? s->tier : PKV_DEVICE;
}

int32_t pkv_seq_slot(const pkv_pool *p, int seq, int pos) {
    const pkv_seq *s = seq_get(p, seq);
    if (!s || pos < 0 || pos >= s->len) return -1;
    return s->table[pos / p->block_size] * p->block_size + pos % p->block_size;
}

const int32_t *pkv_seq_block_table(const pkv_pool *p, int seq, int *n_blocks) {
    const pkv_seq *s = seq_get(p, seq);
    if (n_blocks) *n_blocks = s ? s->n_blocks : 0;
    return s ? s->table : NULL;
}

int pkv_seq_n_blocks(const pkv_pool *p, int seq) {
    const pkv_seq *s = seq_get(p, seq);
    return s ? s->n_blocks : PKV_EINVAL;
}

int pkv_seq_fork(pkv_pool *p, int parent) {
    if (!seq_get(p, parent)) return PKV_EINVAL;
    if (handle_reserve(p) != 0) return PKV_ENOMEM; /* may move p->seqs */
    const pkv_seq *s = &p->seqs[parent];
    int h = handle_next(p);
    if (table_reserve(&p->seqs[h], s->n_blocks) != 0) return PKV_ENOMEM;
    handle_take(p);
    pkv_seq *c = &p->seqs[h];
    pkv_tier_pool *t = &p->tier[s->tier];
    c->tier = s->tier;
    c->len = s->len;
    c->n_blocks = s->n_blocks;
    for (int i = 0; i < s->n_blocks; i++) {
        c->table[i] = s->table[i];
        t->ref[s->table[i]]++;
    }
    return h;
}

void pkv_seq_free(pkv_pool *p, int seq) {
    pkv_seq *s = seq_get(p, seq);
    if (!s) return;
    pkv_tier_pool *t = &p->tier[s->tier];
    /* Release back to front so the free stack hands the blocks out again in
     * table order. */
    while (s->n_blocks > 0) block_release(t, s->table[--s->n_blocks]);
    s->live = 0;
    s->len = 0;
    s->tier = PKV_DEVICE;
    p->free_handles[p->n_free_handles++] = seq;
}

/* Give the sequence private copies of its blocks in tier `to`, releasing
 * its references in the other tier. The caller checked for room. */
static void seq_move(pkv_pool *p, pkv_seq *s, pkv_tier to) {
    pkv_tier from = s->tier;
    pkv_tier_pool *src = &p->tier[from], *dst = &p->tier[to];
    for (int i = 0; i < s->n_blocks; i++) {
        int32_t b = block_alloc(dst);
        memcpy(block_data(p, to, b), block_data(p, from, s->table[i]), p->block_bytes);
        block_release(src, s->table[i]);
        s->table[i] = b;
    }
    s->tier = to;
}

int pkv_swap_out(pkv_pool *p, int seq) {
    pkv_seq *s = seq_get(p, seq);
    if (!s) return PKV_EINVAL;
    if (s->tier != PKV_DEVICE) return PKV_ESTATE;
    if (s->n_blocks > p->tier[PKV_CPU].n_free) return PKV_ENOMEM;
    seq_move(p, s, PKV_CPU);
    p->swaps_out++;
    return 0;
}

int pkv_swap_in(pkv_pool *p, int seq) {
    pkv_seq *s = seq_get(p, seq);
    if (!s) return PKV_EINVAL;
    if (s->tier != PKV_CPU) return PKV_ESTATE;
    if (s->n_blocks > p->tier[PKV_DEVICE].n_free) return PKV_ENOMEM;
    seq_move(p, s, PKV_DEVICE);
    p->swaps_in++;
    return 0;
}

/* ---- checking ---- */

int pkv_check(const pkv_pool *p, char *err, size_t errlen) {
    if (!p) {
        set_err(err, errlen, "no pool");
        return PKV_EINVAL;
    }
    const pkv_tier_pool *tp = p->tier;
    size_t n_dev = (size_t)tp[0].total, n_cpu = (size_t)tp[1].total;
    /* Per block: entries seen in tables, on the free list, last sequence seen
     * (+1, to catch a block twice in one table). Per handle: on the free
     * stack. */
    int32_t *scratch = calloc(3 * (n_dev + n_cpu) + (size_t)p->n_seqs + 1, sizeof *scratch);
    if (!scratch) {
        set_err(err, errlen, "pkv_check: out of memory");
        return PKV_EINVAL;
    }
    int32_t *cnt[2] = {scratch, scratch + n_dev};
    int32_t *in_free[2] = {scratch + n_dev + n_cpu, scratch + 2 * n_dev + n_cpu};
    int32_t *seen[2] = {scratch + 2 * (n_dev + n_cpu), scratch + 3 * n_dev + 2 * n_cpu};
    int32_t *handle_free = scratch + 3 * (n_dev + n_cpu);
    int rc = PKV_EINVAL;
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        set_err(err, errlen, __VA_ARGS__);                                                         \
        goto out;                                                                                  \
    } while (0)

    for (int t = 0; t < 2; t++) {
        if (tp[t].n_free < 0 || tp[t].n_free > tp[t].total)
            FAIL("tier %d: %d free of %d", t, tp[t].n_free, tp[t].total);
        for (int i = 0; i < tp[t].n_free; i++) {
            int32_t b = tp[t].free_list[i];
            if (b < 0 || b >= tp[t].total) FAIL("tier %d: free list holds bad block %d", t, b);
            if (in_free[t][b]++) FAIL("tier %d: block %d twice on the free list", t, b);
        }
    }

    int n_dead = 0;
    for (int h = 0; h < p->n_seqs; h++) {
        const pkv_seq *s = &p->seqs[h];
        if (!s->live) {
            n_dead++;
            if (s->n_blocks != 0 || s->len != 0)
                FAIL("freed sequence %d still holds %d blocks / %d tokens", h, s->n_blocks, s->len);
            continue;
        }
        if (s->tier != PKV_DEVICE && s->tier != PKV_CPU)
            FAIL("sequence %d: bad tier %d", h, (int)s->tier);
        if (s->len < 0 || s->n_blocks != blocks_for(s->len, p->block_size) || s->n_blocks > s->cap)
            FAIL("sequence %d: %d tokens but %d blocks (capacity %d, block size %d)", h, s->len,
                 s->n_blocks, s->cap, p->block_size);
        int t = s->tier;
        for (int i = 0; i < s->n_blocks; i++) {
            int32_t b = s->table[i];
            if (b < 0 || b >= tp[t].total)
                FAIL("sequence %d: table entry %d = bad block %d of tier %d", h, i, b, t);
            if (seen[t][b] == h + 1) FAIL("sequence %d: block %d twice in its table", h, b);
            seen[t][b] = h + 1;
            cnt[t][b]++;
        }
    }

    for (int t = 0; t < 2; t++) {
        int used = 0;
        for (int b = 0; b < tp[t].total; b++) {
            if (in_free[t][b]) {
                if (tp[t].ref[b] != 0 || cnt[t][b] != 0)
                    FAIL("tier %d: free block %d has ref count %d and %d table entries", t, b,
                         tp[t].ref[b], cnt[t][b]);
            } else {
                if (tp[t].ref[b] <= 0) FAIL("tier %d: block %d neither free nor used", t, b);
                if (tp[t].ref[b] != cnt[t][b])
                    FAIL("tier %d: block %d has ref count %d but %d table entries", t, b,
                         tp[t].ref[b], cnt[t][b]);
                used++;
            }
        }
        if (tp[t].n_free + used != tp[t].total)
            FAIL("tier %d: free %d + used %d != total %d", t, tp[t].n_free, used, tp[t].total);
    }

    if (p->n_free_handles != n_dead)
        FAIL("%d handles on the free stack but %d freed sequences", p->n_free_handles, n_dead);
    for (int i = 0; i < p->n_free_handles; i++) {
        int32_t h = p->free_handles[i];
        if (h < 0 || h >= p->n_seqs || p->seqs[h].live || handle_free[h]++)
            FAIL("free handle stack entry %d = %d is live, bad or repeated", i, h);
    }
    rc = 0;
#undef FAIL
out:
    free(scratch);
    return rc;
}

void pkv_get_stats(const pkv_pool *p, pkv_stats *s) {
    memset(s, 0, sizeof *s);
    if (!p) return;
    for (int t = 0; t < 2; t++) {
        s->total[t] = p->tier[t].total;
        s->free[t] = p->tier[t].n_free;
    }
    for (int i = 0; i < p->n_seqs; i++)
        if (p->seqs[i].live) s->tokens[p->seqs[i].tier] += p->seqs[i].len;
    s->swaps_out = p->swaps_out;
    s->swaps_in = p->swaps_in;
    s->blocks_copied_cow = p->blocks_copied_cow;
}
