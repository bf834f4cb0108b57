#include "common/dtype.hpp"

#include <array>

namespace m2h {
namespace {

struct DTypeInfo {
    DType dtype;
    std::uint64_t size;
    std::string_view safetensors;
    std::string_view torch;
    std::string_view storage;  // legacy typed storage class, empty if none
};

constexpr std::array<DTypeInfo, 16> kTable{{
    {DType::BOOL, 1, "BOOL", "bool", "BoolStorage"},
    {DType::U8, 1, "U8", "uint8", "ByteStorage"},
    {DType::I8, 1, "I8", "int8", "CharStorage"},
    {DType::F8_E5M2, 1, "F8_E5M2", "float8_e5m2", ""},
    {DType::F8_E4M3, 1, "F8_E4M3", "float8_e4m3fn", ""},
    {DType::I16, 2, "I16", "int16", "ShortStorage"},
    {DType::U16, 2, "U16", "uint16", ""},
    {DType::F16, 2, "F16", "float16", "HalfStorage"},
    {DType::BF16, 2, "BF16", "bfloat16", "BFloat16Storage"},
    {DType::I32, 4, "I32", "int32", "IntStorage"},
    {DType::U32, 4, "U32", "uint32", ""},
    {DType::F32, 4, "F32", "float32", "FloatStorage"},
    {DType::C64, 8, "C64", "complex64", "ComplexFloatStorage"},
    {DType::F64, 8, "F64", "float64", "DoubleStorage"},
    {DType::I64, 8, "I64", "int64", "LongStorage"},
    {DType::U64, 8, "U64", "uint64", ""},
}};

const DTypeInfo& info(DType d) { return kTable[static_cast<std::size_t>(d)]; }

}  // namespace

std::uint64_t dtype_size(DType d) { return info(d).size; }
std::string_view safetensors_name(DType d) { return info(d).safetensors; }
std::string_view torch_name(DType d) { return info(d).torch; }

std::optional<DType> dtype_from_torch_name(std::string_view name) {
    for (const auto& e : kTable)
        if (e.torch == name) return e.dtype;
    // torch also pickles a few aliases under their canonical names only, but users type these.
    if (name == "float" ) return DType::F32;
    if (name == "half") return DType::F16;
    return std::nullopt;
}

std::optional<DType> dtype_from_storage_class(std::string_view name) {
    for (const auto& e : kTable)
        if (!e.storage.empty() && e.storage == name) return e.dtype;
    if (name == "UntypedStorage") return DType::U8;
    return std::nullopt;
}

std::optional<DType> dtype_from_safetensors_name(std::string_view name) {
    for (const auto& e : kTable)
        if (e.safetensors == name) return e.dtype;
    return std::nullopt;
}

bool is_float(DType d) { return d == DType::F16 || d == DType::BF16 || d == DType::F32 || d == DType::F64; }

}  // namespace m2h
