#include "pickle/value.hpp"

#include <type_traits>

namespace m2h::pickle {
namespace {

// Moves every child pointer of `v` into `out`, leaving `v` shallow.
void take_children(Value& v, std::vector<ValuePtr>& out) {
    std::visit(
        [&out](auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, Tuple> || std::is_same_v<T, List> || std::is_same_v<T, Set>) {
                for (auto& p : x.items) out.push_back(std::move(p));
                x.items.clear();
            } else if constexpr (std::is_same_v<T, Dict>) {
                for (auto& [k, val] : x.items) {
                    out.push_back(std::move(k));
                    out.push_back(std::move(val));
                }
                x.items.clear();
            } else if constexpr (std::is_same_v<T, Object>) {
                out.push_back(std::move(x.args));
                out.push_back(std::move(x.state));
                for (auto& [k, val] : x.dict_items) {
                    out.push_back(std::move(k));
                    out.push_back(std::move(val));
                }
                for (auto& p : x.list_items) out.push_back(std::move(p));
                x.dict_items.clear();
                x.list_items.clear();
            }
        },
        v.v);
}

// The outermost deletion on this thread owns the work list; nested deletions only append to it, so the
// depth of the C++ call stack stays constant whatever the depth of the value tree.
thread_local std::vector<ValuePtr>* g_pending = nullptr;

struct IterativeDelete {
    void operator()(Value* v) const noexcept {
        if (g_pending != nullptr) {
            take_children(*v, *g_pending);
            delete v;
            return;
        }
        std::vector<ValuePtr> pending;
        g_pending = &pending;
        take_children(*v, pending);
        delete v;
        while (!pending.empty()) {
            ValuePtr p = std::move(pending.back());
            pending.pop_back();
            p.reset();  // may re-enter operator() above, which appends to `pending`
        }
        g_pending = nullptr;
    }
};

const char* scalar_kind(const Value& v) {
    return std::visit(
        [](const auto& x) -> const char* {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, None>) return "None";
            else if constexpr (std::is_same_v<T, bool>) return "bool";
            else if constexpr (std::is_same_v<T, std::int64_t>) return "int";
            else if constexpr (std::is_same_v<T, double>) return "float";
            else if constexpr (std::is_same_v<T, std::string>) return "str";
            else if constexpr (std::is_same_v<T, Bytes>) return "bytes";
            else if constexpr (std::is_same_v<T, Tuple>) return "tuple";
            else if constexpr (std::is_same_v<T, List>) return "list";
            else if constexpr (std::is_same_v<T, Dict>) return "dict";
            else if constexpr (std::is_same_v<T, Set>) return "set";
            else if constexpr (std::is_same_v<T, ClassRef>) return "global";
            else if constexpr (std::is_same_v<T, StorageRef>) return "storage";
            else if constexpr (std::is_same_v<T, TensorRef>) return "tensor";
            else if constexpr (std::is_same_v<T, DType>) return "dtype";
            else return "object";
        },
        v.v);
}

}  // namespace

ValuePtr adopt(Value v) { return ValuePtr(new Value(std::move(v)), IterativeDelete{}); }

std::string Value::kind() const {
    std::string k = scalar_kind(*this);
    if (const auto* o = as<Object>()) k += " " + o->cls.qualified();
    else if (const auto* c = as<ClassRef>()) k += " " + c->qualified();
    else if (const auto* d = as<DType>()) k += " " + std::string(torch_name(*d));
    return k;
}

const Dict* attributes(const Value& object) {
    const auto* o = object.as<Object>();
    if (o == nullptr || !o->state) return nullptr;
    return o->state->as<Dict>();
}

ValuePtr get(const Value& container, std::string_view key) {
    const Dict* d = container.as<Dict>();
    if (d == nullptr) d = attributes(container);
    if (d == nullptr) return nullptr;
    // The machine replaces re-set str keys in place, so the first match is the only one.
    for (const auto& [k, v] : d->items) {
        const auto* s = k ? k->as<std::string>() : nullptr;
        if (s != nullptr && *s == key) return v;
    }
    return nullptr;
}

}  // namespace m2h::pickle
