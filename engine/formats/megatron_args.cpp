#include "formats/megatron_args.hpp"

#include "common/error.hpp"

namespace m2h::formats {
namespace {

nlohmann::json plain(const pickle::Value& v, int depth) {
    using namespace pickle;
    if (v.is<None>()) return nullptr;
    if (auto b = v.as<bool>()) return *b;
    if (auto i = v.as<std::int64_t>()) return *i;
    if (auto d = v.as<double>()) return *d;
    if (auto s = v.as<std::string>()) return *s;
    if (auto t = v.as<DType>()) return std::string(torch_name(*t));
    const std::vector<ValuePtr>* items = nullptr;
    if (auto t = v.as<Tuple>()) items = &t->items;
    if (auto l = v.as<List>()) items = &l->items;
    if (items && depth < 8) {
        auto out = nlohmann::json::array();
        for (const auto& item : *items) out.push_back(item ? plain(*item, depth + 1) : nullptr);
        return out;
    }
    return "<" + std::string(v.kind()) + ">";
}

}  // namespace

nlohmann::json args_to_json(const pickle::Value& ns, const std::string& source) {
    const pickle::Dict* attrs = pickle::attributes(ns);
    if (!attrs) throw Error(source, "`args` is a " + std::string(ns.kind()) + ", expected an argparse.Namespace");
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [k, v] : attrs->items) {
        const auto* key = k ? k->as<std::string>() : nullptr;
        if (key && v) out[*key] = plain(*v, 0);
    }
    return out;
}

}  // namespace m2h::formats
