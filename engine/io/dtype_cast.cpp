#include "io/dtype_cast.hpp"

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/error.hpp"

namespace m2h::io {
namespace {

// Scalar kernels that reproduce torch's CPU Tensor.to() bit for bit (NaNs: see kBf16Nan*). They are branch-free so
// that GCC vectorises the block loops even at -O2 (checked with -fopt-info-vec). Where a float operation feeds only
// one case, a ternary makes GCC sink it into a branch, which it then will not if-convert under -ftrapping-math (the
// default); so such choices are made with bit masks, or the float operation is made to serve every lane.

// All ones where `c` holds.
inline std::uint32_t mask(bool c) { return 0u - static_cast<std::uint32_t>(c); }

inline std::uint32_t bf16_to_f32_bits(std::uint16_t h) { return std::uint32_t{h} << 16; }

// Exact, like c10's fp16_ieee_to_fp32_value: subnormals become normal floats; a NaN keeps its sign and payload and is
// made quiet (torch's conversion goes through a float multiply, which sets the quiet bit).
inline std::uint32_t f16_to_f32_bits(std::uint16_t h) {
    const std::uint32_t sign = std::uint32_t{h & 0x8000u} << 16;
    const std::uint32_t exp = (h >> 10) & 0x1Fu;
    const std::uint32_t mant = h & 0x3FFu;
    const std::uint32_t normal = ((exp + 112u) << 23) | (mant << 13);
    const std::uint32_t special = 0x7F800000u | (mant << 13) | (mant != 0 ? 0x00400000u : 0u);
    // mant * 2^-24 is exact in float, and int->float conversion vectorises on every x86 level.
    const std::uint32_t subnormal = std::bit_cast<std::uint32_t>(static_cast<float>(static_cast<std::int32_t>(mant)) *
                                                                 0x1p-24f);
    const std::uint32_t is_sub = mask(exp == 0), is_special = mask(exp == 31);
    return sign | (subnormal & is_sub) | (special & is_special) | (normal & ~(is_sub | is_special));
}

// Round to nearest even; overflow rounds up into the infinity pattern by itself. torch does not agree with itself on
// the NaN it writes (see the callers), so the caller supplies it.
inline std::uint16_t f32_bits_to_bf16(std::uint32_t u, std::uint16_t nan) {
    const std::uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? nan : static_cast<std::uint16_t>(rounded);
}

// Round to nearest even with gradual underflow, like c10's fp16_ieee_from_fp32_value: values from 65520 up become
// infinity, every NaN becomes the sign plus the canonical quiet NaN 0x7E00 (the payload is dropped).
//
// The FPU does the rounding: adding M = 2^(e+13), where 2^e is the f16 binade of |f| (at least 2^-14), leaves exactly
// the f16 precision (ulp(M) = 2^(e-10), the f16 step there, also for subnormals), and the sum's low mantissa bits are
// the rounded f16 significand. One formula covers subnormals, normals and, since |f| is first clamped to 65520 (which
// rounds to 2^16), overflow; so the float add is used by every lane, which GCC needs to vectorise it (see mask()).
inline std::uint16_t f32_bits_to_f16(std::uint32_t u) {
    const std::uint32_t sign = (u >> 16) & 0x8000u;
    const std::uint32_t x = u & 0x7FFFFFFFu;
    const std::uint32_t a = x < 0x477FF000u ? x : 0x477FF000u;  // |f| clamped to 65520; NaN is patched below
    const std::uint32_t be = a >> 23;
    const std::uint32_t bc = be > 113u ? be : 113u;  // biased f32 exponent of the f16 binade: 113 is 2^-14
    const std::uint32_t m_bits = (bc + 13u) << 23;
    const float sum = std::bit_cast<float>(a) + std::bit_cast<float>(m_bits);
    // Significand in f16 steps, the implicit bit included for normals (so it may reach 2048 after rounding up, which
    // carries into the exponent by the addition below).
    const std::uint32_t q = std::bit_cast<std::uint32_t>(sum) - m_bits;
    const std::uint32_t mag = ((bc - 113u) << 10) + q;  // 0x7C00 for every clamped lane
    return static_cast<std::uint16_t>(sign | mag | (0x0200u & mask(x > 0x7F800000u)));
}

// torch's NaN for float/double -> bfloat16 on x86 CPUs (the AVX2/AVX-512 kernels blend in 0xFFFF), and for
// half -> bfloat16, which goes through c10::BFloat16's scalar constructor (0x7FC0). Other torch builds (AVX-512 BF16
// hardware, CUDA) write other NaNs; any NaN is a NaN, we only pick torch 1.13/2.x CPU behaviour to stay comparable.
constexpr std::uint16_t kBf16NanVector = 0xFFFF;
constexpr std::uint16_t kBf16NanScalar = 0x7FC0;

constexpr std::size_t kBlock = 512;

// Copies a block into aligned locals so the element loop works on plain arrays; the unaligned std::byte buffers then
// cost only two memcpys per block. The element loop always runs exactly kBlock times (a short last block is padded
// with zeros): GCC's -O2 cost model vectorises only loops whose trip count is a known multiple of the vector width.
template <class In, class Out, class Fn>
void convert(std::span<const std::byte> src, std::span<std::byte> dst, std::size_t n, Fn fn) {
    alignas(64) In in[kBlock];
    alignas(64) Out out[kBlock];
    for (std::size_t base = 0; base < n; base += kBlock) {
        const std::size_t m = n - base < kBlock ? n - base : kBlock;
        if (m < kBlock) std::memset(in, 0, sizeof in);
        std::memcpy(in, src.data() + base * sizeof(In), m * sizeof(In));
        for (std::size_t i = 0; i < kBlock; ++i) out[i] = fn(in[i]);
        std::memcpy(dst.data() + base * sizeof(Out), out, m * sizeof(Out));
    }
}

std::uint32_t float_bits(float f) { return std::bit_cast<std::uint32_t>(f); }
float bits_float(std::uint32_t u) { return std::bit_cast<float>(u); }

}  // namespace

void cast(DType from, DType to, std::span<const std::byte> src, std::span<std::byte> dst) {
    const std::uint64_t in_size = dtype_size(from);
    const std::uint64_t out_size = dtype_size(to);
    if (src.size() % in_size != 0)
        throw Error("", "cast: source of " + std::to_string(src.size()) + " bytes is not a whole number of " +
                            std::string(safetensors_name(from)) + " elements");
    const std::size_t n = src.size() / in_size;
    if (dst.size() / out_size != n || dst.size() % out_size != 0)
        throw Error("", "cast: destination of " + std::to_string(dst.size()) + " bytes does not hold " +
                            std::to_string(n) + " " + std::string(safetensors_name(to)) + " elements");
    if (from == to) {
        if (n) std::memcpy(dst.data(), src.data(), src.size());
        return;
    }
    if (!is_float(from) || !is_float(to))
        throw Error("", "cannot cast " + std::string(safetensors_name(from)) + " to " +
                            std::string(safetensors_name(to)) + ": only F16, BF16, F32 and F64 convert");

    using u16 = std::uint16_t;
    using u32 = std::uint32_t;
    // Pairs not listed directly go through float, as torch's scalar copy does (double -> half or bfloat16 rounds
    // twice there too, via c10's float constructors).
    switch (from) {
    case DType::F32:
        switch (to) {
        case DType::BF16: return convert<u32, u16>(src, dst, n, [](u32 u) { return f32_bits_to_bf16(u, kBf16NanVector); });
        case DType::F16: return convert<u32, u16>(src, dst, n, [](u32 u) { return f32_bits_to_f16(u); });
        case DType::F64: return convert<float, double>(src, dst, n, [](float f) { return static_cast<double>(f); });
        default: break;
        }
        break;
    case DType::F64:
        switch (to) {
        case DType::F32: return convert<double, float>(src, dst, n, [](double d) { return static_cast<float>(d); });
        case DType::BF16:
            return convert<double, u16>(src, dst, n, [](double d) {
                return f32_bits_to_bf16(float_bits(static_cast<float>(d)), kBf16NanVector);
            });
        case DType::F16:
            return convert<double, u16>(src, dst, n,
                                        [](double d) { return f32_bits_to_f16(float_bits(static_cast<float>(d))); });
        default: break;
        }
        break;
    case DType::BF16:
        switch (to) {
        case DType::F32: return convert<u16, u32>(src, dst, n, [](u16 h) { return bf16_to_f32_bits(h); });
        case DType::F64:
            return convert<u16, double>(src, dst, n,
                                        [](u16 h) { return static_cast<double>(bits_float(bf16_to_f32_bits(h))); });
        case DType::F16: return convert<u16, u16>(src, dst, n, [](u16 h) { return f32_bits_to_f16(bf16_to_f32_bits(h)); });
        default: break;
        }
        break;
    case DType::F16:
        switch (to) {
        case DType::F32: return convert<u16, u32>(src, dst, n, [](u16 h) { return f16_to_f32_bits(h); });
        case DType::F64:
            return convert<u16, double>(src, dst, n,
                                        [](u16 h) { return static_cast<double>(bits_float(f16_to_f32_bits(h))); });
        case DType::BF16:
            return convert<u16, u16>(src, dst, n,
                                     [](u16 h) { return f32_bits_to_bf16(f16_to_f32_bits(h), kBf16NanScalar); });
        default: break;
        }
        break;
    default: break;
    }
    throw Error("", "cannot cast " + std::string(safetensors_name(from)) + " to " + std::string(safetensors_name(to)));
}

}  // namespace m2h::io
