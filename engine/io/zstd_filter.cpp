#include "io/zstd_filter.hpp"

#include <cstdlib>
#include <cstring>

#include <zstd.h>

namespace m2h::io {
namespace {

std::size_t compress(std::size_t cd_nelmts, const unsigned int cd_values[], std::size_t nbytes, std::size_t* buf_size,
                     void** buf) {
    // The level travels as an unsigned int; negative (fast) levels are stored as their two's complement.
    const int level = cd_nelmts > 0 ? static_cast<int>(cd_values[0]) : kZstdDefaultLevel;
    const std::size_t bound = ZSTD_compressBound(nbytes);
    void* out = std::malloc(bound ? bound : 1);
    if (!out) return 0;
    // ZSTD_compress writes a single frame with its content size in the header.
    const std::size_t n = ZSTD_compress(out, bound, *buf, nbytes, level);
    if (ZSTD_isError(n)) {
        std::free(out);
        return 0;
    }
    std::free(*buf);
    *buf = out;
    *buf_size = bound;
    return n;
}

// One frame with a known size (what the standard filter writes) decodes in one call; anything else (several
// frames, a size left out by a streaming writer) goes through the streaming decoder with a growing buffer.
std::size_t decompress(std::size_t nbytes, std::size_t* buf_size, void** buf) {
    const unsigned long long size = ZSTD_getFrameContentSize(*buf, nbytes);
    if (size == ZSTD_CONTENTSIZE_ERROR) return 0;
    if (size != ZSTD_CONTENTSIZE_UNKNOWN && ZSTD_findFrameCompressedSize(*buf, nbytes) == nbytes) {
        if (size > kZstdMaxChunkBytes) return 0;
        void* out = std::malloc(size ? static_cast<std::size_t>(size) : 1);
        if (!out) return 0;
        const std::size_t n = ZSTD_decompress(out, static_cast<std::size_t>(size), *buf, nbytes);
        if (ZSTD_isError(n) || n != size) {
            std::free(out);
            return 0;
        }
        std::free(*buf);
        *buf = out;
        *buf_size = static_cast<std::size_t>(size ? size : 1);
        return n;
    }
    ZSTD_DCtx* dctx = ZSTD_createDCtx();
    if (!dctx) return 0;
    std::size_t capacity = nbytes * 4 + 4096, produced = 0;
    auto* out = static_cast<char*>(std::malloc(capacity));
    ZSTD_inBuffer in{*buf, nbytes, 0};
    bool ok = out != nullptr;
    while (ok) {
        if (produced == capacity) {
            const std::size_t grown_size = capacity >= kZstdMaxChunkBytes / 2 ? kZstdMaxChunkBytes : capacity * 2;
            auto* grown = grown_size > capacity ? static_cast<char*>(std::realloc(out, grown_size)) : nullptr;
            if (!grown) {
                ok = false;
                break;
            }
            out = grown;
            capacity = grown_size;
        }
        ZSTD_outBuffer o{out + produced, capacity - produced, 0};
        const std::size_t last = ZSTD_decompressStream(dctx, &o, &in);
        if (ZSTD_isError(last)) {
            ok = false;
            break;
        }
        produced += o.pos;
        if (in.pos == in.size && last == 0) break;  // every frame complete
        // All input used, room left, and the decoder still wants more: the last frame is cut short.
        if (in.pos == in.size && o.pos < o.size) ok = false;
    }
    ZSTD_freeDCtx(dctx);
    if (!ok) {
        std::free(out);
        return 0;
    }
    std::free(*buf);
    *buf = out;
    *buf_size = capacity;
    return produced;
}

const H5Z_class2_t kClass = {
    H5Z_CLASS_T_VERS,
    kZstdFilterId,
    1,  // encoder present
    1,  // decoder present
    "Zstandard (zstd) compression, megatron2hf",
    nullptr,  // can_apply
    nullptr,  // set_local
    &m2h_zstd_filter,
};

}  // namespace

const H5Z_class2_t* zstd_filter_class() { return &kClass; }

bool zstd_level_valid(int level) { return level >= ZSTD_minCLevel() && level <= ZSTD_maxCLevel(); }

}  // namespace m2h::io

extern "C" std::size_t m2h_zstd_filter(unsigned int flags, std::size_t cd_nelmts, const unsigned int cd_values[],
                                       std::size_t nbytes, std::size_t* buf_size, void** buf) {
    if (!buf || !*buf || !buf_size) return 0;
    if (flags & H5Z_FLAG_REVERSE) return m2h::io::decompress(nbytes, buf_size, buf);
    return m2h::io::compress(cd_nelmts, cd_values, nbytes, buf_size, buf);
}
