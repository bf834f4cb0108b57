// io::cast against torch itself: tests/fixtures/cast_reference.py converts a large set of edge and random values with
// Tensor.to() (and every bf16/f16 pattern), and each result must match bit for bit. NaN outputs only need to be NaNs
// there, because torch's NaN bit patterns depend on the build and the kernel it picks; ours are pinned separately.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "common/error.hpp"
#include "io/dtype_cast.hpp"

namespace {

namespace fs = std::filesystem;
using m2h::DType;
using m2h::io::cast;

std::vector<std::byte> bytes_of(const void* p, std::size_t n) {
    std::vector<std::byte> v(n);
    std::memcpy(v.data(), p, n);
    return v;
}

template <class T>
std::vector<std::byte> bytes_of(const std::vector<T>& v) { return bytes_of(v.data(), v.size() * sizeof(T)); }

template <class T>
std::vector<T> values_of(const std::vector<std::byte>& b) {
    std::vector<T> v(b.size() / sizeof(T));
    std::memcpy(v.data(), b.data(), v.size() * sizeof(T));
    return v;
}

std::vector<std::byte> run_cast(DType from, DType to, const std::vector<std::byte>& src) {
    std::vector<std::byte> dst(src.size() / m2h::dtype_size(from) * m2h::dtype_size(to));
    cast(from, to, src, dst);
    return dst;
}

std::uint16_t f32_to_bf16(float f) {
    auto out = values_of<std::uint16_t>(run_cast(DType::F32, DType::BF16, bytes_of(&f, 4)));
    return out[0];
}
std::uint16_t f32_to_f16(float f) {
    return values_of<std::uint16_t>(run_cast(DType::F32, DType::F16, bytes_of(&f, 4)))[0];
}
float bits_f32(std::uint32_t u) { return std::bit_cast<float>(u); }

std::uint64_t element_bits(const std::byte* p, std::uint64_t size) {
    std::uint64_t v = 0;
    std::memcpy(&v, p, size);  // little-endian host
    return v;
}

bool is_nan_bits(DType t, std::uint64_t b) {
    switch (t) {
    case DType::F16: return (b & 0x7FFF) > 0x7C00;
    case DType::BF16: return (b & 0x7FFF) > 0x7F80;
    case DType::F32: return (b & 0x7FFFFFFF) > 0x7F800000;
    case DType::F64: return (b & 0x7FFFFFFFFFFFFFFFull) > 0x7FF0000000000000ull;
    default: return false;
    }
}

std::vector<std::byte> read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    EXPECT_TRUE(in.good()) << p;
    std::vector<char> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> out(buf.size());
    if (!buf.empty()) std::memcpy(out.data(), buf.data(), buf.size());
    return out;
}

// Runs the torch script once per test binary run; every test that needs it asserts on the result.
struct Reference {
    fs::path dir;
    int status = -1;
    std::string error;
    ~Reference() {
        std::error_code ec;
        if (!dir.empty()) fs::remove_all(dir, ec);
    }
};

const Reference& reference() {
    static Reference ref = [] {
        Reference r;
        const char* py = std::getenv("M2H_PYTHON");
        // ctest sets M2H_SOURCE_DIR; when it is missing this file's own (absolute) path still finds the checkout.
        const char* src_env = std::getenv("M2H_SOURCE_DIR");
        const std::string src = src_env ? src_env : fs::path(__FILE__).parent_path().parent_path().parent_path().string();
        const fs::path script = fs::path(src) / "tests/fixtures/cast_reference.py";
        if (!fs::exists(script)) {
            r.error = "reference script not found: " + script.string() + " (set M2H_SOURCE_DIR)";
            return r;
        }
        // Debian's torch lives with /usr/bin/python3, not necessarily with the python3 on PATH.
        const std::string python = py ? py : "/usr/bin/python3";
        r.dir = fs::temp_directory_path() / ("m2h_cast_reference_" + std::to_string(::getpid()));
        fs::create_directories(r.dir);
        const std::string cmd = "'" + python + "' '" + script.string() + "' '" + r.dir.string() + "'";
        r.status = std::system(cmd.c_str());
        if (r.status != 0) r.error = "command failed (" + std::to_string(r.status) + "): " + cmd;
        return r;
    }();
    return ref;
}

TEST(Cast, MatchesTorchBitForBit) {
    const Reference& ref = reference();
    ASSERT_EQ(ref.status, 0) << ref.error;
    std::ifstream manifest(ref.dir / "manifest.txt");
    ASSERT_TRUE(manifest.good());
    std::string line;
    int cases = 0;
    std::uint64_t nan_total = 0, nan_same_bits = 0;
    while (std::getline(manifest, line)) {
        if (line.empty() || line[0] == '#') {
            if (!line.empty()) std::cout << "[reference " << line.substr(2) << "]\n";
            continue;
        }
        std::istringstream ls(line);
        std::string from_s, to_s, in_file, out_file;
        ls >> from_s >> to_s >> in_file >> out_file;
        SCOPED_TRACE(line);
        const auto from = m2h::dtype_from_safetensors_name(from_s);
        const auto to = m2h::dtype_from_safetensors_name(to_s);
        ASSERT_TRUE(from && to);
        const auto input = read_file(ref.dir / in_file);
        const auto expected = read_file(ref.dir / out_file);
        const std::uint64_t in_size = m2h::dtype_size(*from), out_size = m2h::dtype_size(*to);
        ASSERT_GT(input.size(), 0u);
        ASSERT_EQ(input.size() / in_size * out_size, expected.size());
        const auto got = run_cast(*from, *to, input);

        std::uint64_t mismatches = 0;
        for (std::size_t i = 0; i < expected.size() / out_size; ++i) {
            const std::uint64_t want = element_bits(expected.data() + i * out_size, out_size);
            const std::uint64_t have = element_bits(got.data() + i * out_size, out_size);
            const bool ok = is_nan_bits(*to, want) ? is_nan_bits(*to, have) : want == have;
            if (is_nan_bits(*to, want)) {
                ++nan_total;
                nan_same_bits += want == have;
            }
            if (!ok && ++mismatches <= 5)
                ADD_FAILURE() << "element " << i << ": input 0x" << std::hex
                              << element_bits(input.data() + i * in_size, in_size) << " torch 0x" << want << " ours 0x"
                              << have;
        }
        EXPECT_EQ(mismatches, 0u);
        ++cases;
    }
    EXPECT_EQ(cases, 14);  // all 12 ordered pairs of distinct float types, plus the two round trips
    EXPECT_GT(nan_total, 0u);
    std::cout << "[NaN outputs: " << nan_total << ", identical bit patterns to this torch: " << nan_same_bits << "]\n";
}

TEST(Cast, EveryHalfAndBfloatPatternWidensLikeTorch) {
    // Separate from the table above so a failure names the exhaustive widening directly.
    const Reference& ref = reference();
    ASSERT_EQ(ref.status, 0) << ref.error;
    const auto all = read_file(ref.dir / "in_F16.bin");
    ASSERT_EQ(all.size(), 65536u * 2);
    for (const auto& [from, file] : {std::pair{DType::F16, "F16_to_F32.bin"}, std::pair{DType::BF16, "BF16_to_F32.bin"}}) {
        const auto expected = values_of<std::uint32_t>(read_file(ref.dir / file));
        const auto got = values_of<std::uint32_t>(run_cast(from, DType::F32, all));
        ASSERT_EQ(expected.size(), 65536u);
        // Widening is exact, so here even NaN payloads must agree with torch (torch quiets f16 NaNs only).
        int mismatches = 0;
        for (std::size_t i = 0; i < expected.size(); ++i)
            if (expected[i] != got[i] && ++mismatches <= 5)
                ADD_FAILURE() << file << " pattern 0x" << std::hex << i << ": torch 0x" << expected[i] << " ours 0x" << got[i];
        EXPECT_EQ(mismatches, 0) << file;
    }
}

TEST(Cast, KnownValues) {
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
    EXPECT_EQ(f32_to_bf16(bits_f32(0x3F808000)), 0x3F80);  // tie, even stays
    EXPECT_EQ(f32_to_bf16(bits_f32(0x3F818000)), 0x3F82);  // tie, odd rounds up
    EXPECT_EQ(f32_to_bf16(bits_f32(0x7F7FFFFF)), 0x7F80);  // FLT_MAX overflows to inf
    EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
    EXPECT_EQ(f32_to_bf16(bits_f32(0x00000001)), 0x0000);  // f32 min subnormal
    EXPECT_EQ(f32_to_f16(1.0f), 0x3C00);
    EXPECT_EQ(f32_to_f16(65504.0f), 0x7BFF);
    EXPECT_EQ(f32_to_f16(std::nextafter(65520.0f, 0.0f)), 0x7BFF);
    EXPECT_EQ(f32_to_f16(65520.0f), 0x7C00);
    EXPECT_EQ(f32_to_f16(-1e10f), 0xFC00);
    EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);
    EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);       // tie to even zero
    EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);       // tie 1.5 -> 2
    EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)), 0x0400);  // rounds up into the normals
    EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -24)), 0x8001);
}

TEST(Cast, NanPatternsArePinned) {
    // torch 1.13/2.x on x86 CPUs: float/double -> bfloat16 writes 0xFFFF (vector kernel), half -> bfloat16 goes
    // through c10::BFloat16 (0x7FC0), anything -> half keeps the sign with the canonical 0x7E00.
    EXPECT_EQ(f32_to_bf16(bits_f32(0x7FC00000)), 0xFFFF);
    EXPECT_EQ(f32_to_bf16(bits_f32(0xFF800001)), 0xFFFF);
    EXPECT_EQ(f32_to_f16(bits_f32(0x7F812345)), 0x7E00);
    EXPECT_EQ(f32_to_f16(bits_f32(0xFFC00000)), 0xFE00);
    const std::uint16_t h_nan[2] = {0x7E01, 0xFD00};
    const auto bf = values_of<std::uint16_t>(run_cast(DType::F16, DType::BF16, bytes_of(h_nan, 4)));
    EXPECT_EQ(bf[0], 0x7FC0);
    EXPECT_EQ(bf[1], 0x7FC0);
    const auto f = values_of<std::uint32_t>(run_cast(DType::F16, DType::F32, bytes_of(h_nan, 4)));
    EXPECT_EQ(f[0], 0x7FC02000u);  // payload kept, quiet bit set
    EXPECT_EQ(f[1], 0xFFE00000u);
    const std::uint16_t b_snan = 0x7F81;
    EXPECT_EQ(values_of<std::uint32_t>(run_cast(DType::BF16, DType::F32, bytes_of(&b_snan, 2)))[0], 0x7F810000u);
}

TEST(Cast, BlockBoundariesAndUnalignedBuffers) {
    // Sizes around the internal block, with buffers starting at odd addresses; every element must equal the
    // one-at-a-time result.
    for (const std::size_t n : {0u, 1u, 7u, 511u, 512u, 513u, 1024u, 1537u}) {
        std::vector<float> values(n);
        for (std::size_t i = 0; i < n; ++i) values[i] = std::ldexp(static_cast<float>(i) + 0.37f, static_cast<int>(i % 60) - 30);
        std::vector<std::byte> src(n * 4 + 1), dst(n * 2 + 3);
        if (n) std::memcpy(src.data() + 1, values.data(), n * 4);
        cast(DType::F32, DType::BF16, std::span(src).subspan(1, n * 4), std::span(dst).subspan(3, n * 2));
        std::vector<std::byte> back(n * 4 + 5);
        cast(DType::BF16, DType::F32, std::span(dst).subspan(3, n * 2), std::span(back).subspan(5, n * 4));
        for (std::size_t i = 0; i < n; ++i) {
            std::uint16_t h;
            std::memcpy(&h, dst.data() + 3 + 2 * i, 2);
            ASSERT_EQ(h, f32_to_bf16(values[i])) << n << " " << i;
            std::uint32_t w;
            std::memcpy(&w, back.data() + 5 + 4 * i, 4);
            ASSERT_EQ(w, std::uint32_t{h} << 16) << n << " " << i;
        }
    }
}

TEST(Cast, SameTypeIsACopy) {
    const std::vector<std::uint32_t> v{0x7F800001u, 1, 0xFFFFFFFFu};  // a signalling NaN survives untouched
    const auto in = bytes_of(v);
    EXPECT_EQ(run_cast(DType::F32, DType::F32, in), in);
    EXPECT_EQ(run_cast(DType::I32, DType::I32, in), in);  // a copy needs no float type
}

TEST(Cast, Errors) {
    std::vector<std::byte> src(8), dst(8);
    EXPECT_THROW(cast(DType::F32, DType::BF16, src, dst), m2h::Error);                    // 2 floats need 4 bytes
    EXPECT_THROW(cast(DType::F32, DType::BF16, std::span(src).first(7), dst), m2h::Error);  // partial element
    EXPECT_THROW(cast(DType::F32, DType::F32, src, std::span(dst).first(4)), m2h::Error);
    EXPECT_THROW(cast(DType::I32, DType::F32, src, dst), m2h::Error);
    EXPECT_THROW(cast(DType::F32, DType::I64, src, dst), m2h::Error);
    EXPECT_THROW(cast(DType::F8_E4M3, DType::F16, std::span(src).first(4), dst), m2h::Error);
    EXPECT_NO_THROW(cast(DType::F32, DType::BF16, src, std::span(dst).first(4)));
}

}  // namespace
