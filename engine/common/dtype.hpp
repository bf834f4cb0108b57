#pragma once
// Element types, in the order of the safetensors `Dtype` enum: the reference writer sorts tensors by it.
#include <cstdint>
#include <optional>
#include <string_view>

namespace m2h {

enum class DType : std::uint8_t {
    BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};

std::uint64_t dtype_size(DType d);
std::string_view safetensors_name(DType d);                       // "BF16"
std::string_view torch_name(DType d);                             // "bfloat16"
std::optional<DType> dtype_from_torch_name(std::string_view name);      // "bfloat16" -> BF16
std::optional<DType> dtype_from_storage_class(std::string_view name);   // "BFloat16Storage" -> BF16
std::optional<DType> dtype_from_safetensors_name(std::string_view name);
bool is_float(DType d);  // F16, BF16, F32, F64: the types --dtype can cast between

}  // namespace m2h
