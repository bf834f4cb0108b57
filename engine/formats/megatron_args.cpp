#include "formats/megatron_args.hpp"

#include "common/error.hpp"

namespace m2h::formats {
namespace {

// A pickle shares values freely (memo, DUP), so a few hundred bytes can describe a list of lists whose
// expansion has billions of elements. The conversion is charged per element and per string byte, and stops
// well above anything real args hold (a long data_path blend is a few MB at most).
constexpr std::uint64_t kMaxArgsBytes = std::uint64_t{8} << 20;

struct Budget {
    std::uint64_t left = kMaxArgsBytes;
    const std::string& source;
    void charge(std::uint64_t n) {
        if (n > left)
            throw Error(source, "`args` expand to more than " + std::to_string(kMaxArgsBytes >> 20) +
                                    " MiB of values (shared references multiply them)");
        left -= n;
    }
};

nlohmann::json plain(const pickle::Value& v, int depth, Budget& budget) {
    using namespace pickle;
    budget.charge(64);  // about what a JSON value costs with its place in an array or object
    if (v.is<None>()) return nullptr;
    if (auto b = v.as<bool>()) return *b;
    if (auto i = v.as<std::int64_t>()) return *i;
    if (auto d = v.as<double>()) return *d;
    if (auto s = v.as<std::string>()) {
        budget.charge(s->size());
        return *s;
    }
    if (auto t = v.as<DType>()) return std::string(torch_name(*t));
    const std::vector<ValuePtr>* items = nullptr;
    if (auto t = v.as<Tuple>()) items = &t->items;
    if (auto l = v.as<List>()) items = &l->items;
    if (items && depth < 8) {
        auto out = nlohmann::json::array();
        for (const auto& item : *items) out.push_back(item ? plain(*item, depth + 1, budget) : nullptr);
        return out;
    }
    std::string kind = v.kind();
    budget.charge(kind.size());
    return "<" + kind + ">";
}

}  // namespace

nlohmann::json args_to_json(const pickle::Value& ns, const std::string& source) {
    const pickle::Dict* attrs = pickle::attributes(ns);
    if (!attrs) throw Error(source, "`args` is a " + std::string(ns.kind()) + ", expected an argparse.Namespace");
    nlohmann::json out = nlohmann::json::object();
    Budget budget{kMaxArgsBytes, source};
    for (const auto& [k, v] : attrs->items) {
        const auto* key = k ? k->as<std::string>() : nullptr;
        if (!key || !v) continue;
        budget.charge(key->size());
        out[*key] = plain(*v, 0, budget);
    }
    return out;
}

}  // namespace m2h::formats
