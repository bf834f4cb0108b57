#pragma once
// The values a pickle machine produces. Nothing here is ever executed: a GLOBAL is only a name (ClassRef),
// and objects the machine does not know are kept as inert data (Object).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/dtype.hpp"

namespace m2h::pickle {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct None {};
struct ClassRef {
    std::string module;  // normalised: "builtins", not "__builtin__"
    std::string name;
    std::string qualified() const { return module + "." + name; }
};
// A storage named by a torch.save persistent id: record `data/<key>` of the archive.
struct StorageRef {
    std::string key;
    DType dtype;             // U8 for UntypedStorage
    std::uint64_t nbytes;    // numel * element size (untyped: numel is bytes)
    std::string location;    // "cpu", "cuda:0", ... (ignored)
};
// A tensor from _rebuild_tensor_v2/v3 (or a Parameter wrapping one). Sizes and strides are in elements.
struct TensorRef {
    StorageRef storage;
    DType dtype;
    std::uint64_t storage_offset = 0;
    std::vector<std::uint64_t> size;
    std::vector<std::uint64_t> stride;
};
struct Tuple { std::vector<ValuePtr> items; };
struct List { std::vector<ValuePtr> items; };
struct Dict { std::vector<std::pair<ValuePtr, ValuePtr>> items; };  // ordered; keys may be any value
struct Set { std::vector<ValuePtr> items; };
struct Bytes { std::string data; };
// Anything built from a ClassRef that is not interpreted: NEWOBJ/REDUCE arguments, BUILD state, and items
// added with SETITEM(S)/APPEND(S). argparse.Namespace and dataclasses land here with their BUILD dict as state.
struct Object {
    ClassRef cls;
    ValuePtr args;
    ValuePtr state;
    std::vector<std::pair<ValuePtr, ValuePtr>> dict_items;
    std::vector<ValuePtr> list_items;
};

struct Value {
    std::variant<None, bool, std::int64_t, double, std::string, Bytes, Tuple, List, Dict, Set, ClassRef, StorageRef,
                 TensorRef, DType, Object>
        v;

    template <class T> bool is() const { return std::holds_alternative<T>(v); }
    template <class T> const T* as() const { return std::get_if<T>(&v); }
    template <class T> T* as() { return std::get_if<T>(&v); }
    std::string kind() const;  // "int", "str", "dict", "object argparse.Namespace", ... for messages
};

// Owns `v` through a deleter that frees nested values iteratively, so dropping a deeply nested tree (a
// hostile pickle's list bomb) cannot overflow the C++ stack.
ValuePtr adopt(Value v);
template <class T> ValuePtr make(T x) { return adopt(Value{std::move(x)}); }

// Lookup helpers. `get` finds a str key in a Dict, or an attribute of an Object whose BUILD state is a dict
// (argparse.Namespace, dataclasses); nullptr when absent.
ValuePtr get(const Value& container, std::string_view key);
// The attribute dict of an Object (its BUILD state when that is a dict), else nullptr.
const Dict* attributes(const Value& object);

}  // namespace m2h::pickle
