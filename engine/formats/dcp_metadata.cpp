#include "formats/dcp_metadata.hpp"

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "common/error.hpp"
#include "io/file.hpp"
#include "pickle/pickle_machine.hpp"

namespace m2h::formats {
namespace {

using pickle::Dict;
using pickle::Object;
using pickle::Value;
using pickle::ValuePtr;

constexpr std::uint64_t kMaxMetadataBytes = std::uint64_t{1} << 30;  // a 70B model with optimizer: tens of MB
constexpr std::size_t kMaxDims = 64;
// Box-against-box comparisons the overlap check may make for one file. Megatron layouts need about one per
// chunk; a hostile layout of staggered chunks needs n^2/2, minutes for a few MB of .metadata.
constexpr std::uint64_t kMaxOverlapChecks = 20'000'000;

std::string join_dims(const std::vector<std::uint64_t>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + "]";
}

std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }

bool under(const std::string& module, std::string_view package) {
    return module == package || (module.size() > package.size() && module.starts_with(package) &&
                                 module[package.size()] == '.');
}

// A DCP class of torch (any torch.distributed.* module: the class paths moved between versions) by name.
bool is_torch_class(const Value& v, std::string_view name) {
    const auto* o = v.as<Object>();
    return o != nullptr && o->cls.name == name && under(o->cls.module, "torch.distributed");
}

bool valid_relative_path(std::string_view p) {
    if (p.empty() || p.front() == '/') return false;
    if (p.find('\\') != std::string_view::npos || p.find('\0') != std::string_view::npos) return false;
    std::size_t start = 0;
    while (true) {
        const auto slash = p.find('/', start);
        const auto part = p.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
        if (part.empty() || part == "." || part == "..") return false;
        if (slash == std::string_view::npos) return true;
        start = slash + 1;
    }
}

// `name[@domain]/version` (torch/distributed/checkpoint/_extension.py), e.g. "stream.zstd/1".
bool valid_transform(std::string_view t) {
    const auto token = [](std::string_view s) {
        return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                   c == '_' || c == '-';
        });
    };
    const auto slash = t.find('/');
    if (slash == std::string_view::npos) return false;
    const auto head = t.substr(0, slash);
    const auto version = t.substr(slash + 1);
    const auto at = head.find('@');
    if (at == std::string_view::npos) return token(head) && token(version);
    return token(head.substr(0, at)) && token(head.substr(at + 1)) && token(version);
}

class Parser {
public:
    explicit Parser(const std::string& source) : source_(source), overlap_checks_left_(kMaxOverlapChecks) {}

    DcpMetadata parse(const Value& root);

private:
    [[noreturn]] void fail(const std::string& problem) const { throw Error(source_, "DCP metadata: " + problem); }

    // ---- typed field access; `where` names the fqn and field in messages ----
    ValuePtr optional_field(const Value& obj, std::string_view key) const {
        ValuePtr v = pickle::get(obj, key);
        return (v && !v->is<pickle::None>()) ? v : nullptr;
    }
    ValuePtr field(const Value& obj, std::string_view key, const std::string& where) const {
        ValuePtr v = optional_field(obj, key);
        if (!v) fail(where + ": missing field '" + std::string(key) + "'");
        return v;
    }
    std::uint64_t uint_of(const Value& v, const std::string& where) const {
        const auto* i = v.as<std::int64_t>();
        if (i == nullptr) fail(where + " is a " + v.kind() + ", expected an int");
        if (*i < 0) fail(where + " is negative (" + std::to_string(*i) + ")");
        return static_cast<std::uint64_t>(*i);
    }
    const std::string& str_of(const Value& v, const std::string& where) const {
        const auto* s = v.as<std::string>();
        if (s == nullptr) fail(where + " is a " + v.kind() + ", expected a str");
        return *s;
    }
    const std::vector<ValuePtr>& sequence_of(const Value& v, const std::string& where) const {
        if (const auto* t = v.as<pickle::Tuple>()) return t->items;
        if (const auto* l = v.as<pickle::List>()) return l->items;
        fail(where + " is a " + v.kind() + ", expected a sequence");
    }
    // torch.Size (a tuple after unpickling) or a plain tuple/list of non-negative ints.
    std::vector<std::uint64_t> dims_of(const Value& v, const std::string& where) const {
        const auto& items = sequence_of(v, where);
        if (items.size() > kMaxDims) fail(where + " has " + std::to_string(items.size()) + " dimensions");
        std::vector<std::uint64_t> out;
        out.reserve(items.size());
        for (const auto& x : items) out.push_back(uint_of(*x, where));
        return out;
    }

    DType tensor_dtype(const Value& props, const std::string& where) const;
    DcpStorage storage_info(const Value& info, const std::string& where) const;
    void index_storage(const Value& storage_data);
    const DcpStorage& lookup(const std::string& fqn, const std::vector<std::uint64_t>* offsets) const;
    DcpTensor tensor(const std::string& fqn, const Value& meta) const;
    void check_coverage(const DcpTensor& t) const;

    static std::string storage_key(std::string_view fqn, const std::vector<std::uint64_t>* offsets) {
        std::string k(fqn);
        k.push_back('\0');
        if (offsets == nullptr) return k + "-";
        for (auto o : *offsets) k += std::to_string(o) + ",";
        return k;
    }

    const std::string& source_;
    std::vector<DcpStorage> storages_;
    std::unordered_map<std::string, std::size_t> storage_index_;  // storage_key -> storages_ position
    mutable std::uint64_t overlap_checks_left_;  // for the whole file; see find_overlap
};

DType Parser::tensor_dtype(const Value& props, const std::string& where) const {
    const std::string w = where + ".properties";
    if (!is_torch_class(props, "TensorProperties")) fail(w + " is a " + props.kind() + ", expected TensorProperties");
    const auto& o = *props.as<Object>();
    ValuePtr dtype, layout;
    if (o.state && o.state->is<pickle::Tuple>()) {
        // (dtype, layout, requires_grad, _MEM_FORMAT_ENCODING, pin_memory[, later additions...])
        const auto& items = o.state->as<pickle::Tuple>()->items;
        if (items.size() < 5)
            fail(w + " state is a tuple of " + std::to_string(items.size()) + ", expected at least 5 elements");
        dtype = items[0];
        layout = items[1];
    } else if (pickle::attributes(props) != nullptr) {  // a plain attribute dict, should torch ever drop __getstate__
        dtype = field(props, "dtype", w);
        layout = optional_field(props, "layout");
    } else {
        fail(w + " has no state (" + (o.state ? o.state->kind() : std::string("none")) + ")");
    }
    const auto* d = dtype->as<DType>();
    if (d == nullptr) fail(w + ": dtype is a " + dtype->kind() + ", expected a torch dtype this engine knows");
    if (layout) {
        const auto* s = layout->as<std::string>();
        const auto* c = layout->as<pickle::ClassRef>();
        const bool strided = (s != nullptr && *s == "torch.strided") ||
                             (c != nullptr && c->module == "torch" && c->name == "strided");
        if (!strided) fail(w + ": layout " + (s ? in_quotes(*s) : layout->kind()) + " is not torch.strided");
    }
    return *d;
}

DcpStorage Parser::storage_info(const Value& info, const std::string& where) const {
    if (!is_torch_class(info, "_StorageInfo")) fail(where + " is a " + info.kind() + ", expected _StorageInfo");
    DcpStorage s;
    s.relative_path = str_of(*field(info, "relative_path", where), where + ".relative_path");
    if (!valid_relative_path(s.relative_path))
        fail(where + ".relative_path " + in_quotes(s.relative_path) + " is not a plain relative file name");
    s.offset = uint_of(*field(info, "offset", where), where + ".offset");
    s.length = uint_of(*field(info, "length", where), where + ".length");
    if (s.length > UINT64_MAX - s.offset) fail(where + ": offset + length overflows");
    if (ValuePtr t = optional_field(info, "transform_descriptors")) {
        for (const auto& d : sequence_of(*t, where + ".transform_descriptors")) {
            const auto& text = str_of(*d, where + ".transform_descriptors[]");
            if (!valid_transform(text))
                fail(where + ": transform descriptor " + in_quotes(text) + " is not of the form name[@domain]/version");
            s.transforms.push_back(text);
        }
    }
    return s;
}

void Parser::index_storage(const Value& storage_data) {
    const auto* d = storage_data.as<Dict>();
    if (d == nullptr) fail("storage_data is a " + storage_data.kind() + ", expected a dict");
    storages_.reserve(d->items.size());
    for (const auto& [key, value] : d->items) {
        if (!key || !is_torch_class(*key, "MetadataIndex"))
            fail("a storage_data key is a " + (key ? key->kind() : std::string("nothing")) + ", expected MetadataIndex");
        const std::string& fqn = str_of(*field(*key, "fqn", "storage_data key"), "storage_data key .fqn");
        const std::string where = "storage_data[" + in_quotes(fqn) + "]";
        std::optional<std::vector<std::uint64_t>> offsets;
        if (ValuePtr off = optional_field(*key, "offset")) offsets = dims_of(*off, where + " key .offset");
        if (!value) fail(where + " has no value");
        DcpStorage s = storage_info(*value, where);
        const auto k = storage_key(fqn, offsets ? &*offsets : nullptr);
        if (!storage_index_.emplace(k, storages_.size()).second)
            fail(where + ": two entries for " + (offsets ? "offsets " + join_dims(*offsets) : std::string("the item")));
        storages_.push_back(std::move(s));
    }
}

const DcpStorage& Parser::lookup(const std::string& fqn, const std::vector<std::uint64_t>* offsets) const {
    const auto it = storage_index_.find(storage_key(fqn, offsets));
    if (it == storage_index_.end())
        fail(in_quotes(fqn) + ": no storage_data entry for " +
             (offsets ? "the chunk at offsets " + join_dims(*offsets) : std::string("the byte item")));
    return storages_[it->second];
}

DcpTensor Parser::tensor(const std::string& fqn, const Value& meta) const {
    const std::string where = in_quotes(fqn);
    DcpTensor t;
    t.fqn = fqn;
    t.dtype = tensor_dtype(*field(meta, "properties", where), where);
    t.size = dims_of(*field(meta, "size", where), where + ".size");
    const auto& chunks = sequence_of(*field(meta, "chunks", where), where + ".chunks");
    t.chunks.reserve(chunks.size());
    for (std::size_t i = 0; i < chunks.size(); ++i) {
        const std::string w = where + ".chunks[" + std::to_string(i) + "]";
        if (!is_torch_class(*chunks[i], "ChunkStorageMetadata"))
            fail(w + " is a " + chunks[i]->kind() + ", expected ChunkStorageMetadata");
        DcpChunk c;
        c.offsets = dims_of(*field(*chunks[i], "offsets", w), w + ".offsets");
        c.sizes = dims_of(*field(*chunks[i], "sizes", w), w + ".sizes");
        if (c.offsets.size() != t.size.size() || c.sizes.size() != t.size.size())
            fail(w + ": offsets " + join_dims(c.offsets) + " and sizes " + join_dims(c.sizes) +
                 " do not have the rank of the tensor size " + join_dims(t.size));
        for (std::size_t d = 0; d < t.size.size(); ++d)
            if (c.offsets[d] > t.size[d] || c.sizes[d] > t.size[d] - c.offsets[d])
                fail(w + ": the chunk at offsets " + join_dims(c.offsets) + " with sizes " + join_dims(c.sizes) +
                     " lies outside the tensor size " + join_dims(t.size));
        c.storage = lookup(fqn, &c.offsets);
        t.chunks.push_back(std::move(c));
    }
    check_coverage(t);
    return t;
}

// ---- coverage: no two chunks overlap, and together they hold exactly numel(size) elements ----

struct Box {
    const std::vector<std::uint64_t>* lo;
    const std::vector<std::uint64_t>* len;
    std::size_t index;
    std::uint64_t begin(std::size_t d) const { return (*lo)[d]; }
    std::uint64_t end(std::size_t d) const { return (*lo)[d] + (*len)[d]; }
};

bool boxes_overlap(const Box& a, const Box& b, std::size_t from_dim) {
    for (std::size_t d = from_dim; d < a.lo->size(); ++d)
        if (a.end(d) <= b.begin(d) || b.end(d) <= a.begin(d)) return false;
    return true;
}

// Finds two overlapping boxes among `boxes` (all non-empty, identical along dims < dim). Sorting along `dim`
// splits them into runs with identical intervals; when distinct runs are disjoint (the case for every
// Megatron layout: layer slabs, TP blocks, grids) each run is checked along the next dim, which keeps the
// whole check O(n log n). Otherwise a sweep compares each box with the boxes still open along `dim`.
struct TooIrregular {};  // thrown by find_overlap when its budget runs out

std::optional<std::pair<std::size_t, std::size_t>> find_overlap(std::span<Box> boxes, std::size_t dim,
                                                                std::uint64_t& checks_left) {
    if (boxes.size() < 2) return std::nullopt;
    const std::size_t ndim = boxes.front().lo->size();
    if (dim == ndim) return std::make_pair(boxes[0].index, boxes[1].index);  // identical, non-empty boxes
    std::sort(boxes.begin(), boxes.end(), [dim](const Box& a, const Box& b) {
        return a.begin(dim) != b.begin(dim) ? a.begin(dim) < b.begin(dim) : a.end(dim) < b.end(dim);
    });
    bool laminar = true;
    std::uint64_t max_end = 0;
    for (std::size_t i = 0; i < boxes.size();) {
        std::size_t j = i + 1;
        while (j < boxes.size() && boxes[j].begin(dim) == boxes[i].begin(dim) && boxes[j].end(dim) == boxes[i].end(dim)) ++j;
        if (i > 0 && boxes[i].begin(dim) < max_end) {
            laminar = false;
            break;
        }
        max_end = std::max(max_end, boxes[i].end(dim));
        i = j;
    }
    if (laminar) {
        for (std::size_t i = 0; i < boxes.size();) {
            std::size_t j = i + 1;
            while (j < boxes.size() && boxes[j].begin(dim) == boxes[i].begin(dim)) ++j;
            if (auto hit = find_overlap(boxes.subspan(i, j - i), dim + 1, checks_left)) return hit;
            i = j;
        }
        return std::nullopt;
    }
    std::vector<const Box*> open;
    for (const Box& b : boxes) {
        std::erase_if(open, [&](const Box* a) { return a->end(dim) <= b.begin(dim); });
        if (open.size() > checks_left) throw TooIrregular{};
        checks_left -= open.size();
        for (const Box* a : open)
            if (boxes_overlap(*a, b, dim)) return std::make_pair(a->index, b.index);
        open.push_back(&b);
    }
    return std::nullopt;
}

bool checked_numel(const std::vector<std::uint64_t>& dims, std::uint64_t& out) {
    out = 1;
    for (auto d : dims)
        if (__builtin_mul_overflow(out, d, &out)) return false;
    return true;
}

void Parser::check_coverage(const DcpTensor& t) const {
    const std::string where = in_quotes(t.fqn);
    std::uint64_t total = 0;
    if (!checked_numel(t.size, total)) fail(where + ": the size " + join_dims(t.size) + " overflows");
    std::uint64_t covered = 0;
    std::vector<Box> boxes;
    boxes.reserve(t.chunks.size());
    for (std::size_t i = 0; i < t.chunks.size(); ++i) {
        std::uint64_t n = 0;
        checked_numel(t.chunks[i].sizes, n);  // cannot overflow: the chunk lies inside t.size
        covered += n;  // may wrap only when chunks overlap, which is reported before `covered` is used
        if (n > 0) boxes.push_back(Box{&t.chunks[i].offsets, &t.chunks[i].sizes, i});
    }
    std::optional<std::pair<std::size_t, std::size_t>> hit;
    try {
        hit = find_overlap(boxes, 0, overlap_checks_left_);
    } catch (const TooIrregular&) {
        fail(where + ": the chunks are laid out too irregularly to check for overlaps (more than " +
             std::to_string(kMaxOverlapChecks) + " comparisons)");
    }
    if (hit) {
        const auto& a = t.chunks[hit->first];
        const auto& b = t.chunks[hit->second];
        fail(where + ": the chunks at offsets " + join_dims(a.offsets) + " (sizes " + join_dims(a.sizes) +
             ") and " + join_dims(b.offsets) + " (sizes " + join_dims(b.sizes) + ") overlap");
    }
    // Disjoint boxes inside the tensor hold at most `total` elements, so `covered` did not wrap.
    if (covered != total)
        fail(where + ": the chunks cover " + std::to_string(covered) + " of the " + std::to_string(total) +
             " elements of size " + join_dims(t.size) + " (a hole)");
}

DcpMetadata Parser::parse(const Value& root) {
    const auto* o = root.as<Object>();
    const bool is_root = o != nullptr && ((o->cls.name == "Metadata" && under(o->cls.module, "torch.distributed")) ||
                                          (o->cls.name == "MCoreMetadata" && under(o->cls.module, "megatron")));
    if (!is_root) fail("the root object is a " + root.kind() + ", expected Metadata or MCoreMetadata");
    if (pickle::attributes(root) == nullptr) fail("the root object has no attribute dict");
    const ValuePtr sdm = field(root, "state_dict_metadata", "the root");
    const auto* entries = sdm->as<Dict>();
    if (entries == nullptr) fail("state_dict_metadata is a " + sdm->kind() + ", expected a dict");
    index_storage(*field(root, "storage_data", "the root"));

    DcpMetadata md;
    for (const auto& [key, meta] : entries->items) {
        const std::string& fqn = str_of(*key, "a state_dict_metadata key");
        if (!meta) fail(in_quotes(fqn) + " has no metadata");
        if (is_torch_class(*meta, "BytesStorageMetadata")) {
            md.bytes.push_back(DcpBytesItem{fqn, lookup(fqn, nullptr)});
        } else if (is_torch_class(*meta, "TensorStorageMetadata")) {
            md.tensors.push_back(tensor(fqn, *meta));
        } else {
            fail(in_quotes(fqn) + " is a " + meta->kind() + ", expected TensorStorageMetadata or BytesStorageMetadata");
        }
    }
    return md;
}

}  // namespace

DcpMetadata parse_dcp_metadata(const pickle::Value& root, const std::string& source) {
    return Parser(source).parse(root);
}

DcpMetadata read_dcp_metadata(const std::string& iteration_dir) {
    const std::string path = (std::filesystem::path(iteration_dir) / ".metadata").string();
    const io::File file(path, io::File::Mode::Read);
    const std::uint64_t size = file.size();
    if (size == 0) throw Error(path, "DCP metadata: the file is empty");
    if (size > kMaxMetadataBytes)
        throw Error(path, "DCP metadata: the file has " + std::to_string(size) + " bytes, more than the " +
                              std::to_string(kMaxMetadataBytes) + " accepted");
    std::vector<std::byte> bytes(static_cast<std::size_t>(size));
    file.read_at(0, bytes);
    // No persistent_load: DCP metadata never has persistent ids, so one is an error.
    const ValuePtr root = pickle::unpickle(bytes, path, pickle::PersistentLoad{});
    if (!root) throw Error(path, "DCP metadata: the pickle produced nothing");
    return parse_dcp_metadata(*root, path);
}

}  // namespace m2h::formats
