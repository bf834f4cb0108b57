// The zstd HDF5 filter callback, without HDF5: the standard form (one plain frame with its content size, the
// level as cd_values[0]), decoding of frames other writers make, and failures reported as 0.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include <zstd.h>

#include "io/zstd_filter.hpp"

using namespace m2h::io;

namespace {

std::vector<unsigned char> sample(std::size_t n) {
    std::mt19937 rng(7);
    std::vector<unsigned char> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<unsigned char>(i % 7 == 0 ? rng() : i / 64);
    return v;
}

// A malloc'd copy, as HDF5 hands the filter its chunk buffer.
struct Buffer {
    void* data = nullptr;
    std::size_t size = 0;
    explicit Buffer(const void* from, std::size_t n) : data(std::malloc(n ? n : 1)), size(n) { std::memcpy(data, from, n); }
    ~Buffer() { std::free(data); }
};

std::size_t run(Buffer& b, std::size_t nbytes, unsigned flags, std::vector<unsigned> cd = {}) {
    return m2h_zstd_filter(flags, cd.size(), cd.data(), nbytes, &b.size, &b.data);
}

}  // namespace

TEST(ZstdFilter, CompressesToOnePlainFrameThatLibzstdDecodes) {
    const auto in = sample(300000);
    Buffer b(in.data(), in.size());
    const std::size_t n = run(b, in.size(), 0, {19});
    ASSERT_GT(n, 0u);
    EXPECT_LT(n, in.size());
    EXPECT_GE(b.size, n);
    EXPECT_EQ(ZSTD_getFrameContentSize(b.data, n), in.size());
    EXPECT_EQ(ZSTD_findFrameCompressedSize(b.data, n), n) << "exactly one frame, nothing after it";
    std::vector<unsigned char> out(in.size());
    EXPECT_EQ(ZSTD_decompress(out.data(), out.size(), b.data, n), in.size());
    EXPECT_EQ(out, in);
}

TEST(ZstdFilter, RoundTripsAtDefaultNegativeAndHighLevels) {
    const auto in = sample(70001);
    for (std::vector<unsigned> cd : {std::vector<unsigned>{}, {1u}, {static_cast<unsigned>(-5)}, {22u}}) {
        Buffer b(in.data(), in.size());
        const std::size_t n = run(b, in.size(), 0, cd);
        ASSERT_GT(n, 0u);
        const std::size_t m = run(b, n, H5Z_FLAG_REVERSE);
        ASSERT_EQ(m, in.size());
        EXPECT_EQ(std::memcmp(b.data, in.data(), in.size()), 0);
    }
}

TEST(ZstdFilter, DecodesFramesWithoutContentSizeAndSeveralFrames) {
    const auto in = sample(200000);
    // A streaming writer leaves the content size out; split over two frames as well.
    std::vector<unsigned char> frames(ZSTD_compressBound(in.size()) * 2 + 64);
    std::size_t at = 0;
    for (std::size_t part : {std::size_t{0}, in.size() / 3}) {
        const std::size_t len = part == 0 ? in.size() / 3 : in.size() - in.size() / 3;
        ZSTD_CCtx* cctx = ZSTD_createCCtx();
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
        ZSTD_inBuffer src{in.data() + part, len, 0};
        ZSTD_outBuffer dst{frames.data() + at, frames.size() - at, 0};
        ASSERT_EQ(ZSTD_compressStream2(cctx, &dst, &src, ZSTD_e_end), 0u);
        at += dst.pos;
        ZSTD_freeCCtx(cctx);
    }
    EXPECT_EQ(ZSTD_getFrameContentSize(frames.data(), at), ZSTD_CONTENTSIZE_UNKNOWN);
    Buffer b(frames.data(), at);
    ASSERT_EQ(run(b, at, H5Z_FLAG_REVERSE), in.size());
    EXPECT_EQ(std::memcmp(b.data, in.data(), in.size()), 0);
}

TEST(ZstdFilter, DamagedInputFailsAndKeepsTheBuffer) {
    const auto in = sample(50000);
    Buffer b(in.data(), in.size());
    const std::size_t n = run(b, in.size(), 0, {3});
    ASSERT_GT(n, 0u);
    std::vector<unsigned char> frame(static_cast<unsigned char*>(b.data), static_cast<unsigned char*>(b.data) + n);

    Buffer truncated(frame.data(), n - 10);
    void* kept = truncated.data;
    EXPECT_EQ(run(truncated, n - 10, H5Z_FLAG_REVERSE), 0u);
    EXPECT_EQ(truncated.data, kept);

    Buffer garbage(in.data(), 1000);
    EXPECT_EQ(run(garbage, 1000, H5Z_FLAG_REVERSE), 0u);

    frame[n / 2] ^= 0xFF;
    Buffer flipped(frame.data(), n);
    const std::size_t m = run(flipped, n, H5Z_FLAG_REVERSE);
    EXPECT_TRUE(m == 0 || std::memcmp(flipped.data, in.data(), in.size()) != 0);
}

TEST(ZstdFilter, ClassAndLevels) {
    const auto* c = zstd_filter_class();
    EXPECT_EQ(c->id, 32015);
    EXPECT_EQ(c->version, H5Z_CLASS_T_VERS);
    EXPECT_TRUE(c->encoder_present && c->decoder_present);
    EXPECT_EQ(c->filter, &m2h_zstd_filter);
    EXPECT_TRUE(zstd_level_valid(1) && zstd_level_valid(22) && zstd_level_valid(-5) && zstd_level_valid(0));
    EXPECT_FALSE(zstd_level_valid(23) || zstd_level_valid(99));
}
