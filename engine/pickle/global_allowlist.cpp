#include "pickle/global_allowlist.hpp"

#include <array>
#include <string_view>

namespace m2h::pickle {
namespace {

struct Name {
    std::string_view module, name;
};

// What torch.save, DCP and Megatron write (docs/formats.md §3.4, §5.2).
constexpr std::array<Name, 38> kExact{{
    {"torch._utils", "_rebuild_tensor"},
    {"torch._utils", "_rebuild_tensor_v2"},
    {"torch._utils", "_rebuild_tensor_v3"},
    {"torch._utils", "_rebuild_parameter"},
    {"torch._utils", "_rebuild_parameter_with_state"},
    {"torch._tensor", "_rebuild_from_type_v2"},
    {"torch", "Size"},
    {"torch", "device"},
    {"torch", "Generator"},
    {"torch._C", "Generator"},
    {"torch.serialization", "_get_layout"},
    {"collections", "OrderedDict"},
    {"collections", "defaultdict"},
    {"builtins", "set"},
    {"builtins", "frozenset"},
    {"builtins", "bytes"},
    {"builtins", "bytearray"},
    {"builtins", "complex"},
    {"builtins", "slice"},
    {"builtins", "range"},
    {"builtins", "object"},
    {"builtins", "getattr"},  // enum members by name; interpreted as data, never resolved
    {"_codecs", "encode"},
    {"copyreg", "_reconstructor"},
    {"argparse", "Namespace"},
    {"types", "SimpleNamespace"},
    {"_io", "BytesIO"},
    {"io", "BytesIO"},
    {"signal", "Signals"},
    {"enum", "Enum"},
    {"datetime", "datetime"},
    {"datetime", "timedelta"},
    {"numpy.core.multiarray", "_reconstruct"},
    {"numpy.core.multiarray", "scalar"},
    {"numpy.core.numeric", "_frombuffer"},
    {"numpy", "ndarray"},
    {"numpy", "dtype"},
    {"uuid", "UUID"},
}};

// Data classes and enums of these packages (storages and dtypes of torch; DCP metadata; Megatron and
// TransformerEngine configs and enums; numpy dtype classes).
constexpr std::array<std::string_view, 8> kModulePrefixes{
    "torch.distributed.checkpoint", "torch.distributed._shard.sharded_tensor", "megatron.", "transformer_engine.",
    "numpy.dtypes", "pathlib", "megatron", "nvidia_resiliency_ext."};

}  // namespace

bool is_allowed_global(const ClassRef& c) {
    for (const auto& n : kExact)
        if (c.module == n.module && c.name == n.name) return true;
    // Megatron's args.exit_signal: Python 3.11.2 pickles the enum member as the global signal.SIGTERM.
    if (c.module == "signal" && c.name.starts_with("SIG")) return true;
    if (c.module == "torch" && (c.name.ends_with("Storage") || c.name.starts_with("float") || c.name.starts_with("int") ||
                                c.name.starts_with("uint") || c.name.starts_with("bfloat") || c.name.starts_with("complex") ||
                                c.name == "bool" || c.name == "half" || c.name == "double" || c.name == "long" ||
                                c.name == "strided" || c.name == "contiguous_format" || c.name == "channels_last" ||
                                c.name == "preserve_format"))
        return true;
    for (const auto prefix : kModulePrefixes)
        if (c.module == prefix || (c.module.starts_with(prefix) && (prefix.ends_with('.') || c.module[prefix.size()] == '.')))
            return true;
    return false;
}

}  // namespace m2h::pickle
