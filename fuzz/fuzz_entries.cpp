#include "fuzz_entries.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/dtype.hpp"
#include "common/error.hpp"
#include "formats/dcp_metadata.hpp"
#include "formats/megatron_args.hpp"
#include "formats/torch_archive.hpp"
#include "io/byte_source.hpp"
#include "io/safetensors_reader.hpp"
#include "io/zip_archive.hpp"
#include "pickle/pickle_machine.hpp"
#include "pickle/value.hpp"

namespace m2h::fuzz {
namespace {

// A parser accepted something it promises to refuse: make it a crash, so the fuzzer keeps the input.
#define M2H_FUZZ_CHECK(cond)                                                                        \
    do {                                                                                            \
        if (!(cond)) {                                                                              \
            std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            std::abort();                                                                           \
        }                                                                                           \
    } while (0)

std::vector<std::byte> to_bytes(Input data) {
    const auto* p = reinterpret_cast<const std::byte*>(data.data());
    return std::vector<std::byte>(p, p + data.size());
}

std::span<const std::byte> as_bytes(Input data) {
    return {reinterpret_cast<const std::byte*>(data.data()), data.size()};
}

// Every value reachable from `root`, each once. Pickles share values freely (memo, DUP), so a walk that
// followed every path could take exponential time on a small input; this one is linear in the distinct values.
std::vector<const pickle::Value*> reachable(const pickle::ValuePtr& root) {
    std::vector<const pickle::Value*> out;
    if (!root) return out;
    std::unordered_set<const pickle::Value*> seen;
    std::vector<const pickle::Value*> todo{root.get()};
    const auto push = [&](const pickle::ValuePtr& p) {
        if (p && seen.insert(p.get()).second) todo.push_back(p.get());
    };
    seen.insert(root.get());
    while (!todo.empty()) {
        const pickle::Value* v = todo.back();
        todo.pop_back();
        out.push_back(v);
        if (const auto* t = v->as<pickle::Tuple>()) for (const auto& x : t->items) push(x);
        else if (const auto* l = v->as<pickle::List>()) for (const auto& x : l->items) push(x);
        else if (const auto* s = v->as<pickle::Set>()) for (const auto& x : s->items) push(x);
        else if (const auto* d = v->as<pickle::Dict>()) {
            for (const auto& [k, x] : d->items) {
                push(k);
                push(x);
            }
        } else if (const auto* o = v->as<pickle::Object>()) {
            push(o->args);
            push(o->state);
            for (const auto& [k, x] : o->dict_items) {
                push(k);
                push(x);
            }
            for (const auto& x : o->list_items) push(x);
        }
    }
    return out;
}

// What the indexers do with `args` (root["args"] of a rank file or of the common state).
void convert_args(const pickle::Value& args, const std::string& source) {
    try {
        (void)formats::args_to_json(args, source);
    } catch (const Error&) {
    }
}

// Looks at every value the way consumers do: kind() for messages, attribute lookup; and converts the args
// where the engine would.
void inspect(const pickle::ValuePtr& root) {
    for (const pickle::Value* v : reachable(root)) {
        (void)v->kind();
        if (pickle::attributes(*v) != nullptr) (void)pickle::get(*v, "args");
    }
    if (pickle::attributes(*root) != nullptr) convert_args(*root, "fuzz.pkl");
    if (const auto args = pickle::get(*root, "args")) convert_args(*args, "fuzz.pkl");
}

// The persistent ids torch.save writes: ('storage', <torch.XStorage>, key, location, numel). Mirrors
// TorchArchive::load without a zip behind it; malformed ids are Errors, as there.
pickle::PersistentLoad storage_loader(std::unordered_map<std::string, pickle::ValuePtr>& storages) {
    return [&storages](const pickle::ValuePtr& pid) -> pickle::ValuePtr {
        const auto* t = pid->as<pickle::Tuple>();
        if (t == nullptr || t->items.size() != 5) throw Error("fuzz", "persistent id is not a 5-tuple");
        const auto* tag = t->items[0]->as<std::string>();
        const auto* cls = t->items[1]->as<pickle::ClassRef>();
        const auto* key = t->items[2]->as<std::string>();
        const auto* location = t->items[3]->as<std::string>();
        const auto* numel = t->items[4]->as<std::int64_t>();
        if (tag == nullptr || *tag != "storage" || cls == nullptr || key == nullptr || location == nullptr ||
            numel == nullptr || *numel < 0)
            throw Error("fuzz", "malformed storage persistent id");
        const auto dtype = dtype_from_storage_class(cls->name);
        if (cls->module != "torch" || !dtype) throw Error("fuzz", "not a torch storage class");
        std::uint64_t nbytes = 0;
        const std::uint64_t es = cls->name == "UntypedStorage" ? 1 : dtype_size(*dtype);
        if (__builtin_mul_overflow(static_cast<std::uint64_t>(*numel), es, &nbytes))
            throw Error("fuzz", "storage size overflows");
        if (const auto it = storages.find(*key); it != storages.end()) return it->second;
        auto ref = pickle::make(pickle::StorageRef{*key, *dtype, nbytes, *location});
        storages.emplace(*key, ref);
        return ref;
    };
}

// The oracle for an accepted DCP path, written apart from the parser's own check (std::filesystem here):
// relative, no backslash, no `.` or `..` component (the parser may refuse more, e.g. empty components).
bool plain_relative(std::string_view p) {
    if (p.empty() || p.find('\\') != std::string_view::npos || p.find('\0') != std::string_view::npos) return false;
    const std::filesystem::path path{std::string(p)};
    if (path.is_absolute() || path.has_root_path()) return false;
    for (const auto& part : path)
        if (part == "." || part == "..") return false;
    return true;
}

}  // namespace

void zip_archive(Input data) {
    const io::MemorySource source(to_bytes(data), "fuzz.zip");
    const io::ZipArchive zip(source);
    const std::string prefix(zip.prefix());
    M2H_FUZZ_CHECK(!zip.entries().empty());
    for (const auto& e : zip.entries()) {
        M2H_FUZZ_CHECK(!e.name.empty() && e.name.front() != '/');
        if (e.name.size() > prefix.size() && e.name.compare(0, prefix.size() + 1, prefix + "/") == 0)
            M2H_FUZZ_CHECK(zip.find(e.name.substr(prefix.size() + 1)) == &e);
        try {
            const std::uint64_t at = zip.data_offset(e);
            M2H_FUZZ_CHECK(at <= source.size() && e.size <= source.size() - at);
            const auto bytes = zip.read(e);
            M2H_FUZZ_CHECK(bytes.size() == e.size);
        } catch (const Error&) {
            // A bad record does not stop the others from being tried.
        }
    }
}

void pickle_stream(Input data) {
    std::unordered_map<std::string, pickle::ValuePtr> storages;
    const auto loader = storage_loader(storages);
    const pickle::ValuePtr root = pickle::unpickle(as_bytes(data), "fuzz.pkl", loader);
    M2H_FUZZ_CHECK(root != nullptr);
    inspect(root);
}

void torch_archive(Input data) {
    const io::MemorySource source(to_bytes(data), "fuzz.pt");
    const formats::TorchArchive archive(source);
    const pickle::ValuePtr root = archive.load();
    if (!root) return;
    if (const auto args = pickle::get(*root, "args")) convert_args(*args, "fuzz.pt");
    for (const pickle::Value* v : reachable(root)) {
        const auto* t = v->as<pickle::TensorRef>();
        if (t == nullptr) continue;
        try {
            const auto loc = archive.tensor_location(*t, "tensor");
            M2H_FUZZ_CHECK(loc.offset <= source.size() && loc.nbytes <= source.size() - loc.offset);
            std::uint64_t numel = 1;
            for (auto d : t->size) numel *= d;  // checked by tensor_location
            M2H_FUZZ_CHECK(loc.nbytes == numel * dtype_size(t->dtype));
        } catch (const Error&) {
        }
    }
}

void dcp_metadata(Input data) {
    const pickle::ValuePtr root = pickle::unpickle(as_bytes(data), "fuzz.metadata", pickle::PersistentLoad{});
    M2H_FUZZ_CHECK(root != nullptr);
    const formats::DcpMetadata md = formats::parse_dcp_metadata(*root, "fuzz.metadata");
    const auto check_storage = [](const formats::DcpStorage& s) {
        M2H_FUZZ_CHECK(plain_relative(s.relative_path));
        M2H_FUZZ_CHECK(s.length <= UINT64_MAX - s.offset);
    };
    for (const auto& t : md.tensors) {
        std::uint64_t total = 1;
        for (auto d : t.size) M2H_FUZZ_CHECK(!__builtin_mul_overflow(total, d, &total));
        std::uint64_t covered = 0;
        for (const auto& c : t.chunks) {
            M2H_FUZZ_CHECK(c.offsets.size() == t.size.size() && c.sizes.size() == t.size.size());
            std::uint64_t n = 1;
            for (std::size_t d = 0; d < t.size.size(); ++d) {
                M2H_FUZZ_CHECK(c.offsets[d] <= t.size[d] && c.sizes[d] <= t.size[d] - c.offsets[d]);
                n *= c.sizes[d];
            }
            M2H_FUZZ_CHECK(!__builtin_add_overflow(covered, n, &covered));
            check_storage(c.storage);
        }
        M2H_FUZZ_CHECK(covered == total);
    }
    for (const auto& b : md.bytes) check_storage(b.storage);
}

void safetensors_header(Input data) {
    const auto bytes = as_bytes(data);
    try {
        // What read_safetensors_header does for a file whose header length runs past its end.
        (void)io::parse_safetensors_header(bytes.first(std::min<std::size_t>(bytes.size(), 8)), bytes.size(), "fuzz");
    } catch (const Error&) {
    }
    const io::SafetensorsHeader h = io::parse_safetensors_header(bytes, bytes.size(), "fuzz.safetensors");
    M2H_FUZZ_CHECK(h.header_size <= io::kMaxSafetensorsHeader);
    std::uint64_t total = 0;
    for (const auto& t : h.tensors) {
        M2H_FUZZ_CHECK(t.begin <= t.end);
        total += t.end - t.begin;
    }
    M2H_FUZZ_CHECK(h.data_start() + total == bytes.size());
}

Entry entry_by_name(std::string_view name) {
    if (name == "zip_archive") return &zip_archive;
    if (name == "pickle") return &pickle_stream;
    if (name == "torch_archive") return &torch_archive;
    if (name == "dcp_metadata") return &dcp_metadata;
    if (name == "safetensors_header") return &safetensors_header;
    return nullptr;
}

}  // namespace m2h::fuzz
