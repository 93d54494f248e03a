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
 * The prefix cache (device tier) adds per block: its hash and what it was
 * registered with (parent hash, token ids, shape split, to verify a match
 * beyond the 64-bit hash), a link in a chained hash table (buckets indexed
 * by the hash's low bits) and links in the LRU list of cached blocks (head:
 * least recently used). All of it is O(1) per block but the lookup, which
 * hashes the prompt's full blocks once.
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
    uint64_t *hashes; /* chain hashes of the first n_hashed blocks (registered or not) */
    int n_hashed, hcap;
} pkv_seq;

/* The device tier's prefix cache; arrays are per block unless noted. */
typedef struct {
    int enabled;
    uint64_t salt;    /* root of every hash chain */
    uint8_t *hashed;  /* registered: in the hash table under hash[b] */
    uint64_t *hash;   /* the block's chain hash */
    uint64_t *parent; /* the parent's chain hash it was registered with */
    int32_t *extra;   /* the shape split (rows in the multi-token shape) */
    int32_t *tokens;  /* block_size token ids per block */
    int32_t *hnext;   /* next block in its bucket, -1 ends */
    int32_t *bucket;  /* n_buckets heads, -1 empty */
    uint32_t mask;    /* n_buckets - 1 (a power of two) */
    int32_t *lru_prev, *lru_next;
    int32_t lru_head, lru_tail; /* -1 when empty */
    int n_cached;
    long queried, hits, evictions;
} pkv_prefix;

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
    pkv_prefix pc;
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

/* ---- prefix cache: hash table and LRU list ---- */

static uint64_t mix64(uint64_t x) { /* splitmix64's finalizer */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t block_hash(uint64_t parent, const int32_t *tok, int n, int extra) {
    uint64_t h = mix64(parent ^ 0x9e3779b97f4a7c15ULL);
    h = mix64(h ^ (uint64_t)(uint32_t)extra ^ ((uint64_t)(uint32_t)n << 32));
    for (int i = 0; i < n; i++) h = mix64(h + 0x9e3779b97f4a7c15ULL + (uint64_t)(uint32_t)tok[i]);
    return h;
}

/* Rows of block i of a sequence computed in the multi-token shape. */
static int block_extra(int i, int bs, int n_multi) {
    long r = (long)n_multi - (long)i * bs;
    return r < 0 ? 0 : r > bs ? bs : (int)r;
}

/* The registered block with hash h, parent and contents, or -1. */
static int32_t hash_find(const pkv_pool *p, uint64_t h, uint64_t parent, const int32_t *tok,
                         int extra) {
    const pkv_prefix *c = &p->pc;
    for (int32_t b = c->bucket[h & c->mask]; b >= 0; b = c->hnext[b])
        if (c->hash[b] == h && c->parent[b] == parent && c->extra[b] == extra &&
            !memcmp(c->tokens + (size_t)b * p->block_size, tok,
                    (size_t)p->block_size * sizeof *tok))
            return b;
    return -1;
}

static int hash_has(const pkv_prefix *c, uint64_t h) {
    for (int32_t b = c->bucket[h & c->mask]; b >= 0; b = c->hnext[b])
        if (c->hash[b] == h) return 1;
    return 0;
}

static void hash_remove(pkv_prefix *c, int32_t b) {
    int32_t *at = &c->bucket[c->hash[b] & c->mask];
    while (*at != b) at = &c->hnext[*at];
    *at = c->hnext[b];
    c->hnext[b] = -1;
    c->hashed[b] = 0;
}

static void lru_push_tail(pkv_prefix *c, int32_t b) {
    c->lru_prev[b] = c->lru_tail;
    c->lru_next[b] = -1;
    if (c->lru_tail >= 0) c->lru_next[c->lru_tail] = b;
    else c->lru_head = b;
    c->lru_tail = b;
    c->n_cached++;
}

static void lru_remove(pkv_prefix *c, int32_t b) {
    if (c->lru_prev[b] >= 0) c->lru_next[c->lru_prev[b]] = c->lru_next[b];
    else c->lru_head = c->lru_next[b];
    if (c->lru_next[b] >= 0) c->lru_prev[c->lru_next[b]] = c->lru_prev[b];
    else c->lru_tail = c->lru_prev[b];
    c->lru_prev[b] = c->lru_next[b] = -1;
    c->n_cached--;
}

/* ---- blocks ---- */

/* Blocks an allocation in tier t may take. */
static int n_avail(const pkv_pool *p, pkv_tier t) {
    return p->tier[t].n_free + (t == PKV_DEVICE ? p->pc.n_cached : 0);
}

/* A free block, else (device) the least recently used cached one, which
 * loses its hash. The caller checked n_avail. */
static int32_t block_alloc(pkv_pool *p, pkv_tier tier) {
    pkv_tier_pool *t = &p->tier[tier];
    int32_t b;
    if (t->n_free > 0) {
        b = t->free_list[--t->n_free];
    } else {
        b = p->pc.lru_head;
        lru_remove(&p->pc, b);
        hash_remove(&p->pc, b);
        p->pc.evictions++;
    }
    t->ref[b] = 1;
    return b;
}

static void block_release(pkv_pool *p, pkv_tier tier, int32_t b) {
    pkv_tier_pool *t = &p->tier[tier];
    if (--t->ref[b] != 0) return;
    if (tier == PKV_DEVICE && p->pc.enabled && p->pc.hashed[b]) lru_push_tail(&p->pc, b);
    else t->free_list[t->n_free++] = b;
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
    s->n_hashed = 0;
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

static int prefix_init(pkv_pool *p, const pkv_config *cfg) {
    pkv_prefix *c = &p->pc;
    size_t n = (size_t)cfg->num_blocks;
    uint32_t nb = 1;
    while (nb < n && nb < (1u << 30)) nb <<= 1;
    c->enabled = 1;
    c->salt = mix64(mix64(cfg->prefix_salt ^ 0x7072656669780001ULL) ^ (uint64_t)cfg->dtype ^
                    ((uint64_t)(uint32_t)cfg->block_size << 8));
    c->mask = nb - 1;
    c->lru_head = c->lru_tail = -1;
    c->hashed = calloc(n, 1);
    c->hash = calloc(n, sizeof *c->hash);
    c->parent = calloc(n, sizeof *c->parent);
    c->extra = calloc(n, sizeof *c->extra);
    c->tokens = calloc(n * (size_t)cfg->block_size, sizeof *c->tokens);
    c->hnext = malloc(n * sizeof *c->hnext);
    c->bucket = malloc((size_t)nb * sizeof *c->bucket);
    c->lru_prev = malloc(n * sizeof *c->lru_prev);
    c->lru_next = malloc(n * sizeof *c->lru_next);
    if (!c->hashed || !c->hash || !c->parent || !c->extra || !c->tokens || !c->hnext ||
        !c->bucket || !c->lru_prev || !c->lru_next)
        return PKV_ENOMEM;
    for (size_t i = 0; i < n; i++) c->hnext[i] = c->lru_prev[i] = c->lru_next[i] = -1;
    for (uint32_t i = 0; i < nb; i++) c->bucket[i] = -1;
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
    if (cfg->enable_prefix_caching && prefix_init(p, cfg) != 0) {
        set_err(err, errlen, "out of memory for the prefix cache");
        pkv_free(p);
        return PKV_ENOMEM;
    }
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
    for (int i = 0; i < p->n_seqs; i++) {
        free(p->seqs[i].table);
        free(p->seqs[i].hashes);
    }
    free(p->seqs);
    pkv_prefix *c = &p->pc;
    free(c->hashed);
    free(c->hash);
    free(c->parent);
    free(c->extra);
    free(c->tokens);
    free(c->hnext);
    free(c->bucket);
    free(c->lru_prev);
    free(c->lru_next);
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
    return n_avail(p, t);
}

int pkv_n_cached(const pkv_pool *p) { return p ? p->pc.n_cached : PKV_EINVAL; }

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
    if (need > n_avail(p, PKV_DEVICE)) return PKV_ENOMEM;
    int grown = blocks_for(s->len + n_new, p->block_size);
    if (table_reserve(s, grown) != 0) return PKV_ENOMEM;

    int filled = s->len % p->block_size;
    if (n_new > 0 && filled != 0) {
        int32_t old = s->table[s->n_blocks - 1];
        if (t->ref[old] > 1) {
            int32_t b = block_alloc(p, PKV_DEVICE);
            copy_filled(p, block_data(p, PKV_DEVICE, b), block_data(p, PKV_DEVICE, old), filled);
            t->ref[old]--; /* still > 0: others keep it */
            s->table[s->n_blocks - 1] = b;
            p->blocks_copied_cow++;
        } else if (p->pc.enabled && p->pc.hashed[old]) {
            /* registered while shared, then truncated into (pkv_seq_truncate):
             * now private, it leaves the hash table before it changes */
            hash_remove(&p->pc, old);
        }
    }
    while (s->n_blocks < grown) s->table[s->n_blocks++] = block_alloc(p, PKV_DEVICE);
    s->len += n_new;
    return 0;
}

int pkv_seq_truncate(pkv_pool *p, int seq, int n) {
    pkv_seq *s = seq_get(p, seq);
    if (!s || n < 0 || n > s->len) return PKV_EINVAL;
    int keep = blocks_for(n, p->block_size);
    while (s->n_blocks > keep) block_release(p, s->tier, s->table[--s->n_blocks]);
    s->len = n;
    if (s->n_hashed > n / p->block_size) s->n_hashed = n / p->block_size;
    /* The next append writes into a now partial last block: a registered
     * one must not change under its hash. Shared, it is copied first
     * (copy-on-write); private, it leaves the hash table. */
    if (s->tier == PKV_DEVICE && n % p->block_size != 0 && p->pc.enabled) {
        int32_t b = s->table[s->n_blocks - 1];
        if (p->pc.hashed[b] && p->tier[PKV_DEVICE].ref[b] == 1) hash_remove(&p->pc, b);
    }
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
    /* Release back to front so the free stack hands the blocks out again in
     * table order, and the LRU list evicts a chain's tail before its head. */
    while (s->n_blocks > 0) block_release(p, s->tier, s->table[--s->n_blocks]);
    s->n_hashed = 0;
    s->live = 0;
    s->len = 0;
    s->tier = PKV_DEVICE;
    p->free_handles[p->n_free_handles++] = seq;
}

/* Give the sequence private copies of its blocks in tier `to`, releasing
 * its references in the other tier. The caller checked for room. */
static void seq_move(pkv_pool *p, pkv_seq *s, pkv_tier to) {
    pkv_tier from = s->tier;
    for (int i = 0; i < s->n_blocks; i++) {
        int32_t b = block_alloc(p, to);
        memcpy(block_data(p, to, b), block_data(p, from, s->table[i]), p->block_bytes);
        block_release(p, from, s->table[i]);
        s->table[i] = b;
    }
    s->tier = to;
    /* the device copies are new blocks: register them again (those whose
     * hash is still cached stay unregistered duplicates) */
    if (to == PKV_DEVICE) s->n_hashed = 0;
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
    if (s->n_blocks > n_avail(p, PKV_DEVICE)) return PKV_ENOMEM;
    seq_move(p, s, PKV_DEVICE);
    p->swaps_in++;
    return 0;
}

/* ---- prefix cache ---- */

/* Capacity for n chain hashes; changes nothing observable. */
static int hashes_reserve(pkv_seq *s, int n) {
    if (n <= s->hcap) return 0;
    int cap = s->hcap > INT_MAX / 2 ? INT_MAX : s->hcap * 2;
    if (cap < n) cap = n;
    if (cap < 4) cap = 4;
    uint64_t *h = realloc(s->hashes, (size_t)cap * sizeof *h);
    if (!h) return PKV_ENOMEM;
    s->hashes = h;
    s->hcap = cap;
    return 0;
}

/* Walk the chain of tokens' full blocks (never all tokens) while the cache
 * holds them; blocks[] and hashes[] (either may be NULL) get the matches.
 * Returns the count; *n_idle counts the cached (ref 0) ones. */
static int prefix_walk(const pkv_pool *p, const int32_t *tokens, int n_tokens, int n_multi,
                       int32_t *blocks, uint64_t *hashes, int *n_idle) {
    const int bs = p->block_size;
    int n = 0, idle = 0;
    if (p->pc.enabled && n_tokens > 1) {
        uint64_t parent = p->pc.salt;
        for (int i = 0; i < (n_tokens - 1) / bs; i++) {
            const int32_t *tok = tokens + (size_t)i * bs;
            int extra = block_extra(i, bs, n_multi);
            uint64_t h = block_hash(parent, tok, bs, extra);
            int32_t b = hash_find(p, h, parent, tok, extra);
            if (b < 0) break;
            if (blocks) blocks[n] = b;
            if (hashes) hashes[n] = h;
            idle += p->tier[PKV_DEVICE].ref[b] == 0;
            n++;
            parent = h;
        }
    }
    if (n_idle) *n_idle = idle;
    return n;
}

int pkv_prefix_lookup(const pkv_pool *p, const int32_t *tokens, int n_tokens, int n_multi,
                      int *n_idle) {
    if (n_idle) *n_idle = 0;
    if (!p || n_tokens < 0 || (n_tokens > 0 && !tokens)) return PKV_EINVAL;
    return prefix_walk(p, tokens, n_tokens, n_multi, NULL, NULL, n_idle);
}

int pkv_seq_new_prefix(pkv_pool *p, const int32_t *tokens, int n_tokens, int n_multi, int *n_hit) {
    if (n_hit) *n_hit = 0;
    if (!p || n_tokens < 0 || (n_tokens > 0 && !tokens)) return PKV_EINVAL;
    if (handle_reserve(p) != 0) return PKV_ENOMEM;
    int h = handle_next(p);
    pkv_seq *s = &p->seqs[h];
    int most = p->pc.enabled && n_tokens > 1 ? (n_tokens - 1) / p->block_size : 0;
    if (table_reserve(s, most) != 0 || hashes_reserve(s, most) != 0) return PKV_ENOMEM;
    handle_take(p);
    int n = prefix_walk(p, tokens, n_tokens, n_multi, s->table, s->hashes, NULL);
    pkv_tier_pool *t = &p->tier[PKV_DEVICE];
    for (int i = 0; i < n; i++) {
        int32_t b = s->table[i];
        if (t->ref[b]++ == 0) lru_remove(&p->pc, b);
    }
    s->n_blocks = s->n_hashed = n;
    s->len = n * p->block_size;
    if (p->pc.enabled) {
        p->pc.queried += n_tokens;
        p->pc.hits += s->len;
    }
    if (n_hit) *n_hit = s->len;
    return h;
}

void pkv_seq_cache_computed(pkv_pool *p, int seq, const int32_t *tokens, int n_computed,
                            int n_multi) {
    pkv_seq *s = seq_get(p, seq);
    if (!s || !p->pc.enabled || s->tier != PKV_DEVICE || !tokens) return;
    const int bs = p->block_size;
    int full = (n_computed < s->len ? n_computed : s->len) / bs;
    if (full <= s->n_hashed || hashes_reserve(s, full) != 0) return;
    pkv_prefix *c = &p->pc;
    for (int i = s->n_hashed; i < full; i++) {
        const int32_t *tok = tokens + (size_t)i * bs;
        uint64_t parent = i > 0 ? s->hashes[i - 1] : c->salt;
        int extra = block_extra(i, bs, n_multi);
        uint64_t h = block_hash(parent, tok, bs, extra);
        s->hashes[i] = h;
        int32_t b = s->table[i];
        /* registered already (a shared block), or a twin holds this hash */
        if (c->hashed[b] || hash_has(c, h)) continue;
        c->hashed[b] = 1;
        c->hash[b] = h;
        c->parent[b] = parent;
        c->extra[b] = extra;
        memcpy(c->tokens + (size_t)b * bs, tok, (size_t)bs * sizeof *tok);
        c->hnext[b] = c->bucket[h & c->mask];
        c->bucket[h & c->mask] = b;
    }
    s->n_hashed = full;
}

/* ---- checking ---- */

#define FAILC(...)                                                                                 \
    do {                                                                                           \
        set_err(err, errlen, __VA_ARGS__);                                                         \
        return PKV_EINVAL;                                                                         \
    } while (0)

/* The prefix cache's part of pkv_check: the LRU list's links, the hash
 * table's chains, and that only registered blocks are cached. Marks
 * in_lru[b] for every cached block. in_free: the device free list marks. */
static int check_prefix(const pkv_pool *p, const int32_t *in_free, int32_t *in_lru, char *err,
                        size_t errlen) {
    const pkv_prefix *c = &p->pc;
    const int total = p->tier[PKV_DEVICE].total;
    if (!c->enabled) {
        if (c->n_cached != 0) FAILC("prefix caching is off but %d blocks are cached", c->n_cached);
        return 0;
    }
    int n = 0, n_hashed = 0, n_entries = 0;
    for (int32_t b = c->lru_head, prev = -1; b != -1; prev = b, b = c->lru_next[b]) {
        if (b < 0 || b >= total) FAILC("LRU list holds bad block %d", b);
        if (in_lru[b]++) FAILC("block %d twice in the LRU list", b);
        if (c->lru_prev[b] != prev)
            FAILC("LRU list: block %d links back to %d, not %d", b, c->lru_prev[b], prev);
        if (!c->hashed[b]) FAILC("cached block %d is not registered", b);
        if (p->tier[PKV_DEVICE].ref[b] != 0 || in_free[b])
            FAILC("cached block %d has ref count %d%s", b, p->tier[PKV_DEVICE].ref[b],
                  in_free[b] ? " and is on the free list" : "");
        if (c->lru_next[b] == -1 && c->lru_tail != b) FAILC("LRU tail is not the last block");
        n++;
    }
    if (n != c->n_cached) FAILC("LRU list holds %d blocks but %d are counted", n, c->n_cached);
    for (int b = 0; b < total; b++) {
        if (!c->hashed[b]) continue;
        n_hashed++;
        if (in_free[b]) FAILC("free block %d is registered", b);
    }
    for (uint32_t k = 0; k <= c->mask; k++) {
        for (int32_t b = c->bucket[k]; b != -1; b = c->hnext[b]) {
            if (b < 0 || b >= total) FAILC("hash bucket %u holds bad block %d", k, b);
            if (!c->hashed[b] || (c->hash[b] & c->mask) != k)
                FAILC("hash bucket %u holds block %d, %s", k, b,
                      c->hashed[b] ? "whose hash is another bucket's" : "which is not registered");
            int steps = 0;
            for (int32_t o = c->hnext[b]; o >= 0 && o < total && steps++ <= n_hashed;
                 o = c->hnext[o])
                if (o == b || c->hash[o] == c->hash[b])
                    FAILC("hash bucket %u holds blocks %d and %d under one hash", k, b, o);
            if (++n_entries > n_hashed) break; /* a cycle: reported below */
        }
    }
    if (n_entries != n_hashed)
        FAILC("hash table holds %d entries but %d blocks are registered", n_entries, n_hashed);
    return 0;
}

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
    int32_t *scratch = calloc(3 * (n_dev + n_cpu) + n_dev + (size_t)p->n_seqs + 1, sizeof *scratch);
    if (!scratch) {
        set_err(err, errlen, "pkv_check: out of memory");
        return PKV_EINVAL;
    }
    int32_t *cnt[2] = {scratch, scratch + n_dev};
    int32_t *in_free[2] = {scratch + n_dev + n_cpu, scratch + 2 * n_dev + n_cpu};
    int32_t *seen[2] = {scratch + 2 * (n_dev + n_cpu), scratch + 3 * n_dev + 2 * n_cpu};
    int32_t *in_lru = scratch + 3 * (n_dev + n_cpu);
    int32_t *handle_free = in_lru + n_dev;
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

    if (check_prefix(p, in_free[PKV_DEVICE], in_lru, err, errlen) != 0) goto out;

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
        int used = 0, cached = 0;
        for (int b = 0; b < tp[t].total; b++) {
            if (t == PKV_DEVICE && in_lru[b]) {
                if (cnt[t][b] != 0) FAIL("cached block %d has %d table entries", b, cnt[t][b]);
                cached++;
            } else if (in_free[t][b]) {
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
        if (tp[t].n_free + cached + used != tp[t].total)
            FAIL("tier %d: free %d + cached %d + used %d != total %d", t, tp[t].n_free, cached,
                 used, tp[t].total);
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
#undef FAILC
out:
    free(scratch);
    return rc;
}

void pkv_get_stats(const pkv_pool *p, pkv_stats *s) {
    memset(s, 0, sizeof *s);
    if (!p) return;
    for (int t = 0; t < 2; t++) {
        s->total[t] = p->tier[t].total;
        s->free[t] = n_avail(p, (pkv_tier)t);
    }
    s->cached = p->pc.n_cached;
    s->prefix_queried_tokens = p->pc.queried;
    s->prefix_hit_tokens = p->pc.hits;
    s->prefix_evictions = p->pc.evictions;
    for (int i = 0; i < p->n_seqs; i++)
        if (p->seqs[i].live) s->tokens[p->seqs[i].tier] += p->seqs[i].len;
    s->swaps_out = p->swaps_out;
    s->swaps_in = p->swaps_in;
    s->blocks_copied_cow = p->blocks_copied_cow;
}
