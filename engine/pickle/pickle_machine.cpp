#include "pickle/pickle_machine.hpp"
#include "pickle/global_allowlist.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdio>
#include <memory>
#include <optional>
#include <unordered_map>

#include "common/error.hpp"

namespace m2h::pickle {
namespace {

// Opcode bytes (CPython Lib/pickletools.py).
enum Op : std::uint8_t {
    MARK = 0x28, STOP = 0x2E, POP = 0x30, POP_MARK = 0x31, DUP = 0x32, FLOAT = 0x46, INT = 0x49, BININT = 0x4A,
    BININT1 = 0x4B, LONG = 0x4C, BININT2 = 0x4D, NONE = 0x4E, PERSID = 0x50, BINPERSID = 0x51, REDUCE = 0x52,
    STRING = 0x53, BINSTRING = 0x54, SHORT_BINSTRING = 0x55, UNICODE = 0x56, BINUNICODE = 0x58, APPEND = 0x61,
    BUILD = 0x62, GLOBAL = 0x63, DICT = 0x64, EMPTY_DICT = 0x7D, APPENDS = 0x65, GET = 0x67, BINGET = 0x68,
    INST = 0x69, LONG_BINGET = 0x6A, LIST = 0x6C, EMPTY_LIST = 0x5D, OBJ = 0x6F, PUT = 0x70, BINPUT = 0x71,
    LONG_BINPUT = 0x72, SETITEM = 0x73, TUPLE = 0x74, EMPTY_TUPLE = 0x29, SETITEMS = 0x75, BINFLOAT = 0x47,
    PROTO = 0x80, NEWOBJ = 0x81, EXT1 = 0x82, EXT2 = 0x83, EXT4 = 0x84, TUPLE1 = 0x85, TUPLE2 = 0x86,
    TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8A, LONG4 = 0x8B, BINBYTES = 0x42,
    SHORT_BINBYTES = 0x43, SHORT_BINUNICODE = 0x8C, BINUNICODE8 = 0x8D, BINBYTES8 = 0x8E, EMPTY_SET = 0x8F,
    ADDITEMS = 0x90, FROZENSET = 0x91, NEWOBJ_EX = 0x92, STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95,
    BYTEARRAY8 = 0x96, NEXT_BUFFER = 0x97, READONLY_BUFFER = 0x98,
};

const char* refused_name(std::uint8_t op) {
    switch (op) {
        case PERSID: return "PERSID";
        case EXT1: return "EXT1";
        case EXT2: return "EXT2";
        case EXT4: return "EXT4";
        case INST: return "INST";
        case OBJ: return "OBJ";
        case NEXT_BUFFER: return "NEXT_BUFFER";
        case READONLY_BUFFER: return "READONLY_BUFFER";
        case STRING: return "STRING";
        case UNICODE: return "UNICODE";
        default: return nullptr;
    }
}

std::string hex_byte(std::uint8_t b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", b);
    return buf;
}

// Decodes one UTF-8 sequence at `i`; nullopt when malformed. Surrogates are allowed because CPython
// writes str with "surrogatepass".
std::optional<std::uint32_t> next_code_point(std::string_view s, std::size_t& i) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (b0 < 0x80) { ++i; return b0; }
    if ((b0 & 0xE0) == 0xC0) { len = 2; cp = b0 & 0x1F; }
    else if ((b0 & 0xF0) == 0xE0) { len = 3; cp = b0 & 0x0F; }
    else if ((b0 & 0xF8) == 0xF0) { len = 4; cp = b0 & 0x07; }
    else return std::nullopt;
    if (s.size() - i < len) return std::nullopt;
    for (std::size_t k = 1; k < len; ++k) {
        const auto b = static_cast<unsigned char>(s[i + k]);
        if ((b & 0xC0) != 0x80) return std::nullopt;
        cp = (cp << 6) | (b & 0x3F);
    }
    static constexpr std::uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF) return std::nullopt;  // overlong or out of range
    i += len;
    return cp;
}

bool valid_utf8(std::string_view s) {
    for (std::size_t i = 0; i < s.size();)
        if (!next_code_point(s, i)) return false;
    return true;
}

std::string latin1_to_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        const auto b = static_cast<unsigned char>(c);
        if (b < 0x80) {
            out.push_back(c);
        } else {
            out.push_back(static_cast<char>(0xC0 | (b >> 6)));
            out.push_back(static_cast<char>(0x80 | (b & 0x3F)));
        }
    }
    return out;
}

// Protocol 2 writes Python 3 names the Python 2 way; normalise so the allow-list sees one spelling.
ClassRef normalise(std::string module, std::string name) {
    if (module == "__builtin__") module = "builtins";
    else if (module == "copy_reg") module = "copyreg";
    else if (module == "pathlib._local") module = "pathlib";
    else if (module == "numpy._core" || module.starts_with("numpy._core.")) module = "numpy.core" + module.substr(11);
    return ClassRef{std::move(module), std::move(name)};
}

bool is_pathlib_class(const ClassRef& c) {
    return c.module == "pathlib" && (c.name == "PosixPath" || c.name == "PurePosixPath" || c.name == "WindowsPath" ||
                                     c.name == "PureWindowsPath" || c.name == "Path" || c.name == "PurePath");
}

class Machine {
public:
    Machine(std::span<const std::byte> bytes, const std::string& source, const PersistentLoad& persistent_load,
            const Limits& limits)
        : in_(bytes), source_(source), persistent_load_(persistent_load), limits_(limits),
          copy_budget_(2 * std::uint64_t{bytes.size()} + kCopyFloor) {}

    ValuePtr run();

private:
    // Bookkeeping for every container the machine makes. Values only ever get nested once they are
    // complete; a container that is changed after being nested is refused, which keeps depths exact and
    // rules out reference cycles (shared_ptr cycles would leak and make every tree walk loop forever).
    // A dict key as Python compares it, for the key types that matter: str by content, int and bool by value
    // (True == 1), None. Strings are interned to ids once per key object, so neither the index nor a
    // memoized key used in many dicts copies or rehashes the text.
    struct KeyId {
        std::uint8_t tag;  // 0 str (v = interned id), 1 int (v = the value's bits), 2 None
        std::uint64_t v;
        bool operator==(const KeyId&) const = default;
    };
    struct KeyIdHash {
        std::size_t operator()(const KeyId& k) const noexcept { return std::hash<std::uint64_t>{}(k.v * 3 + k.tag); }
    };

    struct Node {
        std::size_t depth = 1;
        bool nested = false;
        ValuePtr keep;  // keeps the address unique while it is a key here
        std::unique_ptr<std::unordered_map<KeyId, std::size_t, KeyIdHash>> dict_index;  // Dict: key -> position
        ValuePtr own_state;  // Object: the attribute dict BUILD merges into, made here and held by nothing else
    };

    [[noreturn]] void fail(const std::string& problem) const {
        throw Error(source_, "pickle: " + problem + " at offset " + std::to_string(op_offset_));
    }

    // ---- input ----
    std::uint64_t remaining() const { return in_.size() - pos_; }
    void need(std::uint64_t n, const char* what) const {
        if (n > remaining())
            fail(std::string("truncated ") + what + " (needs " + std::to_string(n) + " bytes, " +
                 std::to_string(remaining()) + " left)");
    }
    std::string_view take(std::uint64_t n, const char* what) {
        need(n, what);
        std::string_view s(reinterpret_cast<const char*>(in_.data()) + pos_, static_cast<std::size_t>(n));
        pos_ += static_cast<std::size_t>(n);
        return s;
    }
    std::uint64_t le(std::size_t n, const char* what) {
        const auto s = take(n, what);
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < n; ++i) v |= std::uint64_t{static_cast<unsigned char>(s[i])} << (8 * i);
        return v;
    }
    std::string_view line(const char* what) {
        const auto* begin = reinterpret_cast<const char*>(in_.data()) + pos_;
        const std::string_view rest(begin, static_cast<std::size_t>(remaining()));
        const auto nl = rest.find('\n');
        if (nl == std::string_view::npos) fail(std::string("unterminated ") + what);
        pos_ += nl + 1;
        return rest.substr(0, nl);
    }
    std::int64_t decimal(std::string_view text, const char* what) const {
        std::int64_t v = 0;
        const auto* end = text.data() + text.size();
        const auto [p, ec] = std::from_chars(text.data(), end, v);
        if (ec != std::errc() || p != end || text.empty()) fail(std::string("bad ") + what + " '" + std::string(text) + "'");
        return v;
    }
    std::int64_t little_endian_long(std::uint64_t n, const char* what) {
        if (n > 16) fail(std::string(what) + " of " + std::to_string(n) + " bytes is too large (int64 only)");
        const auto s = take(n, what);
        if (n == 0) return 0;
        const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
        const bool negative = (byte(n - 1) & 0x80) != 0;
        std::uint64_t u = 0;
        for (std::size_t i = 0; i < std::min<std::size_t>(n, 8); ++i) u |= std::uint64_t{byte(i)} << (8 * i);
        if (n < 8 && negative) u |= ~std::uint64_t{0} << (8 * n);
        if (n > 8) {
            // Bytes beyond the eighth must be pure sign extension, and agree with bit 63.
            for (std::size_t i = 8; i < n; ++i)
                if (byte(i) != (negative ? 0xFF : 0x00)) fail(std::string(what) + " value does not fit in int64");
            if (((byte(7) & 0x80) != 0) != negative) fail(std::string(what) + " value does not fit in int64");
        }
        return std::bit_cast<std::int64_t>(u);
    }

    // ---- copies ----
    // Memoized values cost two bytes to reuse, so anything that copies a value's contents (set(list),
    // torch.Size(tuple), bytes(b), a tensor's storage name and sizes, a global's names, BUILD merges) could turn a
    // small pickle into gigabytes. Copies are charged against twice the input size plus kCopyFloor (units:
    // elements or bytes); real writers copy each value about once.
    static constexpr std::uint64_t kCopyFloor = std::uint64_t{1} << 16;
    void charge_copy(std::uint64_t units) {
        if (units > copy_budget_) fail("the pickle copies shared values over and over (more than the input size allows)");
        copy_budget_ -= units;
    }
    // Every object keeps a copy of its class's names, which real pickles keep short; long ones are charged.
    void charge_names(std::string_view module, std::string_view name) {
        constexpr std::size_t kFree = 128;
        charge_copy((module.size() > kFree ? module.size() : 0) + (name.size() > kFree ? name.size() : 0));
    }

    // ---- stack ----
    std::size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
    void check_stack() const {
        if (stack_.size() + marks_.size() > limits_.max_stack)
            fail("stack deeper than " + std::to_string(limits_.max_stack));
    }
    void push(ValuePtr v) {
        stack_.push_back(std::move(v));
        check_stack();
    }
    ValuePtr pop() {
        if (stack_.size() <= floor()) fail("stack underflow");
        ValuePtr v = std::move(stack_.back());
        stack_.pop_back();
        return v;
    }
    const ValuePtr& top() const {
        if (stack_.size() <= floor()) fail("stack underflow");
        return stack_.back();
    }
    std::vector<ValuePtr> pop_mark() {
        if (marks_.empty()) fail("opcode needs a MARK but none is open");
        const std::size_t m = marks_.back();
        marks_.pop_back();
        std::vector<ValuePtr> items(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(m)),
                                    std::make_move_iterator(stack_.end()));
        stack_.resize(m);
        return items;
    }

    // ---- containers ----
    std::size_t depth_of(const ValuePtr& v) const {
        const auto it = nodes_.find(v.get());
        return it == nodes_.end() ? 0 : it->second.depth;
    }
    void mark_nested(const ValuePtr& v) {
        const auto it = nodes_.find(v.get());
        if (it != nodes_.end()) it->second.nested = true;
    }
    void check_depth(std::size_t d) const {
        if (d > limits_.max_depth) fail("containers nested deeper than " + std::to_string(limits_.max_depth));
    }
    // Depth of a new container over `children`, which become nested; call before moving them into it.
    std::size_t nest(std::span<const ValuePtr> children) {
        std::size_t d = 0;
        for (const auto& c : children) d = std::max(d, depth_of(c));
        check_depth(d + 1);
        for (const auto& c : children) mark_nested(c);
        return d + 1;
    }
    ValuePtr adopt_container(Value v, std::size_t depth) {
        ValuePtr p = adopt(std::move(v));
        Node& n = nodes_[p.get()];
        n = Node{};
        n.depth = depth;
        n.keep = p;
        return p;
    }
    template <class C> ValuePtr make_seq(std::vector<ValuePtr> items) {
        const std::size_t d = nest(items);
        return adopt_container(Value{C{std::move(items)}}, d);
    }
    ValuePtr make_tuple(std::vector<ValuePtr> items) { return make_seq<Tuple>(std::move(items)); }
    ValuePtr empty_dict() { return adopt_container(Value{Dict{}}, 1); }

    // Called before `parent` gains `child` in place.
    Node& mutate(const ValuePtr& parent, std::span<const ValuePtr> children) {
        auto it = nodes_.find(parent.get());
        if (it == nodes_.end()) {
            // A container that did not come from this machine (a persistent_load result).
            it = nodes_.emplace(parent.get(), Node{}).first;
            it->second.keep = parent;
        }
        Node& n = it->second;
        if (n.nested) fail("a " + parent->kind() + " is changed after being nested (self-referential data is not supported)");
        std::size_t d = n.depth;
        for (const auto& c : children) {
            if (c == parent) fail("a " + parent->kind() + " is added to itself (self-referential data is not supported)");
            d = std::max(d, depth_of(c) + 1);
        }
        check_depth(d);
        n.depth = d;
        for (const auto& c : children) mark_nested(c);
        return n;
    }

    // Python dict semantics for the key types that matter: re-setting a key replaces its value in place.
    std::optional<KeyId> dict_key(const ValuePtr& k) {
        if (const auto* s = k->as<std::string>()) {
            const auto it = str_key_ids_.find(k.get());
            if (it != str_key_ids_.end()) return KeyId{0, it->second.second};
            // The view points into the first key object with this text, which str_key_ids_ keeps alive.
            const auto id = str_ids_.emplace(std::string_view(*s), str_ids_.size()).first->second;
            str_key_ids_.emplace(k.get(), std::make_pair(k, id));
            return KeyId{0, id};
        }
        if (const auto* i = k->as<std::int64_t>()) return KeyId{1, static_cast<std::uint64_t>(*i)};
        if (const auto* b = k->as<bool>()) return KeyId{1, *b ? 1u : 0u};
        if (k->is<None>()) return KeyId{2, 0};
        return std::nullopt;
    }
    void set_items(const ValuePtr& target, std::vector<ValuePtr> kv) {
        Node& n = mutate(target, kv);
        if (auto* d = target->as<Dict>()) {
            if (!n.dict_index) n.dict_index = std::make_unique<std::unordered_map<KeyId, std::size_t, KeyIdHash>>();
            for (std::size_t i = 0; i + 1 < kv.size(); i += 2) {
                const auto key = dict_key(kv[i]);
                if (key) {
                    const auto [it, fresh] = n.dict_index->emplace(*key, d->items.size());
                    if (!fresh) {
                        d->items[it->second].second = std::move(kv[i + 1]);
                        continue;
                    }
                }
                d->items.emplace_back(std::move(kv[i]), std::move(kv[i + 1]));
            }
        } else if (auto* o = target->as<Object>()) {
            for (std::size_t i = 0; i + 1 < kv.size(); i += 2) o->dict_items.emplace_back(std::move(kv[i]), std::move(kv[i + 1]));
        } else {
            fail("SETITEM(S) on a " + target->kind());
        }
    }
    void append_items(const ValuePtr& target, std::vector<ValuePtr> items, bool to_set) {
        mutate(target, items);
        auto* dst = to_set ? (target->is<Set>() ? &target->as<Set>()->items : nullptr)
                           : (target->is<List>() ? &target->as<List>()->items : nullptr);
        if (dst == nullptr) {
            auto* o = target->as<Object>();
            if (o == nullptr) fail(std::string(to_set ? "ADDITEMS" : "APPEND(S)") + " on a " + target->kind());
            dst = &o->list_items;
        }
        for (auto& v : items) dst->push_back(std::move(v));
    }

    // ---- memo ----
    void memo_put(std::uint64_t idx) {
        const ValuePtr& v = top();
        auto it = memo_.find(idx);
        if (it != memo_.end()) {
            it->second = v;
            return;
        }
        if (memo_.size() >= limits_.max_memo) fail("memo larger than " + std::to_string(limits_.max_memo) + " entries");
        memo_.emplace(idx, v);
    }
    void memo_get(std::uint64_t idx) {
        const auto it = memo_.find(idx);
        if (it == memo_.end()) fail("memo index " + std::to_string(idx) + " was never set");
        push(it->second);
    }

    // ---- the allow-list ----
    const Tuple& args_of(const ClassRef& c, const ValuePtr& args, std::size_t lo, std::size_t hi) const {
        const auto* t = args->as<Tuple>();
        if (t == nullptr) fail(c.qualified() + " called with " + args->kind() + " instead of an argument tuple");
        if (t->items.size() < lo || t->items.size() > hi)
            fail(c.qualified() + " called with " + std::to_string(t->items.size()) + " arguments");
        return *t;
    }
    std::uint64_t non_negative(const ValuePtr& v, const ClassRef& c, const char* what) const {
        const auto* i = v->as<std::int64_t>();
        if (i == nullptr) fail(c.qualified() + ": " + what + " is a " + v->kind() + ", expected an int");
        if (*i < 0) fail(c.qualified() + ": " + what + " is negative (" + std::to_string(*i) + ")");
        return static_cast<std::uint64_t>(*i);
    }
    std::vector<std::uint64_t> int_tuple(const ValuePtr& v, const ClassRef& c, const char* what) const {
        const auto* t = v->as<Tuple>();
        if (t == nullptr) fail(c.qualified() + ": " + what + " is a " + v->kind() + ", expected a tuple of ints");
        std::vector<std::uint64_t> out;
        out.reserve(t->items.size());
        for (const auto& x : t->items) out.push_back(non_negative(x, c, what));
        return out;
    }

    ValuePtr rebuild_tensor(const ClassRef& c, const ValuePtr& args, int version) {
        // v1: (storage, offset, size, stride); v2: + (requires_grad, hooks[, metadata]);
        // v3: + (requires_grad, hooks, dtype[, metadata]).
        const Tuple& a = version == 1 ? args_of(c, args, 4, 4) : version == 2 ? args_of(c, args, 6, 7) : args_of(c, args, 7, 8);
        const auto* storage = a.items[0]->as<StorageRef>();
        if (storage == nullptr) fail(c.qualified() + ": argument 0 is a " + a.items[0]->kind() + ", expected a storage");
        const auto dims = [](const ValuePtr& v) { return v->is<Tuple>() ? v->as<Tuple>()->items.size() : 0; };
        charge_copy(storage->key.size() + storage->location.size() + dims(a.items[2]) + dims(a.items[3]));
        TensorRef t;
        t.storage = *storage;
        t.dtype = storage->dtype;
        t.storage_offset = non_negative(a.items[1], c, "storage offset");
        t.size = int_tuple(a.items[2], c, "size");
        t.stride = int_tuple(a.items[3], c, "stride");
        if (t.size.size() != t.stride.size())
            fail(c.qualified() + ": size has " + std::to_string(t.size.size()) + " dims but stride has " +
                 std::to_string(t.stride.size()));
        if (version >= 2 && !a.items[4]->is<bool>())
            fail(c.qualified() + ": requires_grad is a " + a.items[4]->kind() + ", expected a bool");
        std::size_t meta = 6;
        if (version == 3) {
            const auto* d = a.items[6]->as<DType>();
            if (d == nullptr) fail(c.qualified() + ": unsupported dtype (" + a.items[6]->kind() + ")");
            t.dtype = *d;
            meta = 7;
        }
        if (version >= 2 && a.items.size() > meta) {
            // Conjugate/negative bits of complex views; a plain dense tensor carries none that are set.
            const auto& m = a.items[meta];
            if (const auto* d = m->as<Dict>()) {
                for (const auto& [k, v] : d->items)
                    if (const auto* b = v->as<bool>(); b == nullptr || *b)
                        fail(c.qualified() + ": tensor metadata flags are not supported");
            } else if (!m->is<None>()) {
                fail(c.qualified() + ": metadata is a " + m->kind());
            }
        }
        return make(std::move(t));
    }

    ValuePtr object(const ClassRef& c, ValuePtr args) {
        charge_names(c.module, c.name);
        const std::size_t d = nest(std::span<const ValuePtr>(&args, 1));
        Object o;
        o.cls = c;
        o.args = std::move(args);
        return adopt_container(Value{std::move(o)}, d);
    }

    // REDUCE (or NEWOBJ on a class that behaves the same). Never resolves anything: known names get a data
    // representation, every other allowed name an inert Object.
    ValuePtr call(const ClassRef& c, const ValuePtr& args, bool newobj) {
        charge_names(c.module, c.name);  // for `q`, and the Object most names end up in
        const std::string q = c.qualified();
        if (!newobj) {
            if (q == "torch._utils._rebuild_tensor") return rebuild_tensor(c, args, 1);
            if (q == "torch._utils._rebuild_tensor_v2") return rebuild_tensor(c, args, 2);
            if (q == "torch._utils._rebuild_tensor_v3") return rebuild_tensor(c, args, 3);
            if (q == "torch._utils._rebuild_parameter") return args_of(c, args, 3, 3).items[0];
            if (q == "torch._utils._rebuild_parameter_with_state") return args_of(c, args, 4, 4).items[0];
            if (q == "torch.serialization._get_layout") {
                const auto& a = args_of(c, args, 1, 1);
                if (!a.items[0]->is<std::string>()) fail(q + ": argument is a " + a.items[0]->kind());
                return a.items[0];
            }
            if (q == "_codecs.encode") {
                const auto& a = args_of(c, args, 2, 2);
                const auto* text = a.items[0]->as<std::string>();
                const auto* enc = a.items[1]->as<std::string>();
                if (text == nullptr || enc == nullptr) fail(q + ": expected (str, str) arguments");
                if (*enc != "latin1" && *enc != "latin-1") fail(q + ": unsupported encoding '" + *enc + "'");
                charge_copy(text->size());
                Bytes b;
                b.data.reserve(text->size());
                for (std::size_t i = 0; i < text->size();) {
                    const auto cp = next_code_point(*text, i);
                    if (!cp || *cp > 0xFF) fail(q + ": code point above U+00FF in latin1 text");
                    b.data.push_back(static_cast<char>(static_cast<unsigned char>(*cp)));
                }
                return make(std::move(b));
            }
            if (is_pathlib_class(c)) {
                const auto& a = args_of(c, args, 0, SIZE_MAX);
                std::string path;
                for (const auto& part : a.items) {
                    const auto* s = part->as<std::string>();
                    if (s == nullptr) fail(q + ": path part is a " + part->kind());
                    charge_copy(s->size() + 1);
                    if (!path.empty() && path.back() != '/') path.push_back('/');
                    path += *s;
                }
                return make(std::move(path));
            }
            if (q == "torch.Size") {
                const auto& a = args_of(c, args, 1, 1);
                const auto* dims = a.items[0]->as<Tuple>();
                if (dims == nullptr) fail(q + ": argument is a " + a.items[0]->kind());
                for (const auto& d : dims->items)
                    if (!d->is<std::int64_t>()) fail(q + ": dimension is a " + d->kind());
                charge_copy(dims->items.size());
                return make_tuple(dims->items);
            }
        }
        if (q == "collections.OrderedDict") {
            args_of(c, args, 0, 0);
            return empty_dict();
        }
        if (q == "builtins.set" || q == "builtins.frozenset") {
            const auto& a = args_of(c, args, 0, 1);
            std::vector<ValuePtr> items;
            if (!a.items.empty()) {
                const auto& src = a.items[0];
                if (const auto* l = src->as<List>()) items = l->items;
                else if (const auto* t = src->as<Tuple>()) items = t->items;
                else if (const auto* st = src->as<Set>()) items = st->items;
                else fail(q + ": argument is a " + src->kind());
                charge_copy(items.size());
            }
            return make_seq<Set>(std::move(items));
        }
        if (q == "builtins.bytes" || q == "builtins.bytearray") {
            const auto& a = args_of(c, args, 0, 1);
            if (a.items.empty()) return make(Bytes{});
            const auto* b = a.items[0]->as<Bytes>();
            if (b == nullptr) fail(q + ": argument is a " + a.items[0]->kind());
            charge_copy(b->data.size());
            return make(Bytes{b->data});
        }
        // builtins.getattr, argparse.Namespace, types.SimpleNamespace, _io.BytesIO, numpy, enums and the other
        // allowed names: inert data (a name off the allow-list was already refused at GLOBAL).
        return object(c, args);
    }

    void build() {
        ValuePtr state = pop();
        const ValuePtr& target = top();
        auto* o = target->as<Object>();
        if (o == nullptr) return;  // BUILD on a dict (state_dict _metadata) or anything else: attributes only
        const ValuePtr children[] = {state};
        mutate(target, children);
        if (o->cls.module == "_io" && o->cls.name == "BytesIO") {
            const auto* t = state->as<Tuple>();
            const auto* b = (t != nullptr && !t->items.empty()) ? t->items[0]->as<Bytes>() : nullptr;
            if (b == nullptr) fail("_io.BytesIO state is a " + state->kind());
            charge_copy(b->data.size());
            target->v = Bytes{b->data};
            return;
        }
        // (dict-or-None, slots-dict) pairs and repeated BUILDs update one attribute dict, as
        // inst.__dict__.update(state) does: a name set again keeps its place and takes the new value.
        std::vector<const Dict*> updates;
        if (const auto* t = state->as<Tuple>(); t != nullptr && t->items.size() == 2 && t->items[1]->is<Dict>() &&
                                                 (t->items[0]->is<Dict>() || t->items[0]->is<None>())) {
            if (const auto* d = t->items[0]->as<Dict>()) updates.push_back(d);
            updates.push_back(t->items[1]->as<Dict>());
        } else if (state->is<Dict>() && o->state && o->state->is<Dict>()) {
            updates.push_back(state->as<Dict>());
        } else {
            o->state = state;
            return;
        }
        Node& n = nodes_[target.get()];  // made by mutate() above; references into nodes_ survive rehashing
        if (!n.own_state || n.own_state != o->state) {
            // First merge into this object: start a private attribute dict, which later merges update in place
            // (copying the whole dict on every BUILD would be quadratic).
            n.own_state = adopt_container(Value{Dict{}}, 1);
            mark_nested(n.own_state);
            if (o->state && o->state->is<Dict>()) {
                charge_copy(o->state->as<Dict>()->items.size());
                merge_into(n.own_state, *o->state->as<Dict>());
            }
            o->state = n.own_state;
        }
        for (const Dict* d : updates) merge_into(n.own_state, *d);
        n.depth = std::max(n.depth, depth_of(n.own_state) + 1);
        check_depth(n.depth);
    }

    // Sets the items of `from` in `own` (a dict only the machine holds), replacing values of keys it has.
    void merge_into(const ValuePtr& own, const Dict& from) {
        Node& m = nodes_[own.get()];
        if (!m.dict_index) m.dict_index = std::make_unique<std::unordered_map<KeyId, std::size_t, KeyIdHash>>();
        auto& items = own->as<Dict>()->items;
        for (const auto& [k, v] : from.items) {
            m.depth = std::max({m.depth, depth_of(k) + 1, depth_of(v) + 1});
            if (const auto key = dict_key(k)) {
                const auto [it, fresh] = m.dict_index->emplace(*key, items.size());
                if (!fresh) {
                    items[it->second].second = v;
                    continue;
                }
            }
            items.emplace_back(k, v);
        }
        check_depth(m.depth);
    }

    void step(std::uint8_t op);

    std::span<const std::byte> in_;
    std::size_t pos_ = 0;
    std::size_t op_offset_ = 0;
    const std::string& source_;
    const PersistentLoad& persistent_load_;
    Limits limits_;
    std::vector<ValuePtr> stack_;
    std::vector<std::size_t> marks_;
    std::unordered_map<std::uint64_t, ValuePtr> memo_;
    std::unordered_map<const Value*, Node> nodes_;
    std::unordered_map<const Value*, std::pair<ValuePtr, std::uint64_t>> str_key_ids_;  // str key object -> id
    std::unordered_map<std::string_view, std::uint64_t> str_ids_;  // text -> id; views into str_key_ids_ keys
    std::uint64_t copy_budget_;
    ValuePtr result_;
    bool stopped_ = false;
};

ValuePtr Machine::run() {
    while (!stopped_) {
        op_offset_ = pos_;
        if (pos_ >= in_.size()) fail("input ended before STOP");
        const auto op = static_cast<std::uint8_t>(in_[pos_++]);
        step(op);
    }
    return std::move(result_);
}

void Machine::step(std::uint8_t op) {
    switch (op) {
        case PROTO: {
            const auto v = le(1, "PROTO");
            if (v > 5) fail("unsupported protocol " + std::to_string(v));
            break;
        }
        case FRAME: {
            const auto n = le(8, "FRAME");
            if (n > remaining()) fail("frame of " + std::to_string(n) + " bytes runs past the end");
            break;  // framing is only a read-ahead hint; the opcode stream is contiguous
        }
        case STOP:
            result_ = pop();
            stopped_ = true;
            break;
        case MARK:
            marks_.push_back(stack_.size());
            check_stack();
            break;
        case POP:
            // Like CPython: with nothing above the innermost mark, POP discards the mark.
            if (!marks_.empty() && stack_.size() == marks_.back()) marks_.pop_back();
            else pop();
            break;
        case POP_MARK: pop_mark(); break;
        case DUP: push(ValuePtr(top())); break;

        case NONE: push(make(pickle::None{})); break;
        case NEWTRUE: push(make(true)); break;
        case NEWFALSE: push(make(false)); break;
        case BININT: push(make(static_cast<std::int64_t>(static_cast<std::int32_t>(le(4, "BININT"))))); break;
        case BININT1: push(make(static_cast<std::int64_t>(le(1, "BININT1")))); break;
        case BININT2: push(make(static_cast<std::int64_t>(le(2, "BININT2")))); break;
        case LONG1: {
            const auto n = le(1, "LONG1");
            push(make(little_endian_long(n, "LONG1")));
            break;
        }
        case LONG4: {
            const auto n = static_cast<std::int32_t>(le(4, "LONG4"));
            if (n < 0) fail("LONG4 with negative length");
            push(make(little_endian_long(static_cast<std::uint64_t>(n), "LONG4")));
            break;
        }
        case INT: {
            const auto text = line("INT");
            if (text == "00") push(make(false));
            else if (text == "01") push(make(true));
            else push(make(decimal(text, "INT")));
            break;
        }
        case LONG: {
            auto text = line("LONG");
            if (!text.empty() && text.back() == 'L') text.remove_suffix(1);
            push(make(decimal(text, "LONG")));
            break;
        }
        case BINFLOAT: {
            const auto s = take(8, "BINFLOAT");
            std::uint64_t u = 0;
            for (char c : s) u = (u << 8) | static_cast<unsigned char>(c);  // big-endian, unlike everything else
            push(make(std::bit_cast<double>(u)));
            break;
        }
        case FLOAT: {
            const auto text = line("FLOAT");
            double d = 0;
            const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
            if (ec != std::errc() || p != text.data() + text.size() || text.empty())
                fail("bad FLOAT '" + std::string(text) + "'");
            push(make(d));
            break;
        }

        case SHORT_BINUNICODE:
        case BINUNICODE:
        case BINUNICODE8: {
            const auto n = op == SHORT_BINUNICODE ? le(1, "string length") : op == BINUNICODE ? le(4, "string length") : le(8, "string length");
            const auto s = take(n, "string");
            if (!valid_utf8(s)) fail("invalid UTF-8 in string");
            push(make(std::string(s)));
            break;
        }
        case SHORT_BINSTRING:
        case BINSTRING: {
            std::uint64_t n = 0;
            if (op == SHORT_BINSTRING) {
                n = le(1, "string length");
            } else {
                const auto len = static_cast<std::int32_t>(le(4, "string length"));
                if (len < 0) fail("BINSTRING with negative length");
                n = static_cast<std::uint64_t>(len);
            }
            const auto s = take(n, "string");
            push(make(valid_utf8(s) ? std::string(s) : latin1_to_utf8(s)));  // a Python 2 str
            break;
        }
        case SHORT_BINBYTES:
        case BINBYTES:
        case BINBYTES8:
        case BYTEARRAY8: {
            const auto n = op == SHORT_BINBYTES ? le(1, "bytes length") : op == BINBYTES ? le(4, "bytes length") : le(8, "bytes length");
            push(make(Bytes{std::string(take(n, "bytes"))}));
            break;
        }

        case EMPTY_TUPLE: push(make_tuple({})); break;
        case TUPLE: push(make_tuple(pop_mark())); break;
        case TUPLE1:
        case TUPLE2:
        case TUPLE3: {
            const std::size_t n = op - TUPLE1 + 1;
            std::vector<ValuePtr> items(n);
            for (std::size_t i = n; i-- > 0;) items[i] = pop();
            push(make_tuple(std::move(items)));
            break;
        }
        case EMPTY_LIST: push(make_seq<List>({})); break;
        case LIST: push(make_seq<List>(pop_mark())); break;
        case APPEND: {
            ValuePtr v = pop();
            append_items(top(), {std::move(v)}, false);
            break;
        }
        case APPENDS: {
            auto items = pop_mark();
            append_items(top(), std::move(items), false);
            break;
        }
        case EMPTY_DICT: push(empty_dict()); break;
        case DICT: {
            auto kv = pop_mark();
            if (kv.size() % 2 != 0) fail("DICT with an odd number of items");
            ValuePtr d = empty_dict();
            set_items(d, std::move(kv));
            push(std::move(d));
            break;
        }
        case SETITEM: {
            ValuePtr v = pop();
            ValuePtr k = pop();
            set_items(top(), {std::move(k), std::move(v)});
            break;
        }
        case SETITEMS: {
            auto kv = pop_mark();
            if (kv.size() % 2 != 0) fail("SETITEMS with an odd number of items");
            set_items(top(), std::move(kv));
            break;
        }
        case EMPTY_SET: push(make_seq<Set>({})); break;
        case ADDITEMS: {
            auto items = pop_mark();
            append_items(top(), std::move(items), true);
            break;
        }
        case FROZENSET: push(make_seq<Set>(pop_mark())); break;

        case BINPUT: memo_put(le(1, "BINPUT")); break;
        case LONG_BINPUT: memo_put(le(4, "LONG_BINPUT")); break;
        case PUT: {
            const auto idx = decimal(line("PUT"), "PUT index");
            if (idx < 0) fail("negative PUT index");
            memo_put(static_cast<std::uint64_t>(idx));
            break;
        }
        case MEMOIZE: memo_put(memo_.size()); break;
        case BINGET: memo_get(le(1, "BINGET")); break;
        case LONG_BINGET: memo_get(le(4, "LONG_BINGET")); break;
        case GET: {
            const auto idx = decimal(line("GET"), "GET index");
            if (idx < 0) fail("negative GET index");
            memo_get(static_cast<std::uint64_t>(idx));
            break;
        }

        case GLOBAL:
        case STACK_GLOBAL: {
            std::string module, name;
            if (op == GLOBAL) {
                module = std::string(line("GLOBAL module"));
                name = std::string(line("GLOBAL name"));
            } else {
                ValuePtr n = pop();
                ValuePtr m = pop();
                const auto* ns = n->as<std::string>();
                const auto* ms = m->as<std::string>();
                if (ns == nullptr || ms == nullptr) fail("STACK_GLOBAL needs two strs");
                charge_names(*ms, *ns);
                module = *ms;
                name = *ns;
            }
            ClassRef c = normalise(std::move(module), std::move(name));
            if (!is_allowed_global(c))
                fail("refusing global " + c.qualified() + ": not a data type a checkpoint may contain (nothing in a "
                     "checkpoint is ever executed)");
            if (c.module == "torch") {
                if (const auto d = dtype_from_torch_name(c.name)) {
                    push(make(*d));
                    break;
                }
            }
            push(make(std::move(c)));
            break;
        }
        case REDUCE:
        case NEWOBJ: {
            ValuePtr args = pop();
            ValuePtr callable = pop();
            if (const auto* c = callable->as<ClassRef>()) {
                push(call(*c, args, op == NEWOBJ));
            } else {
                // Calling something that is not a name (e.g. the result of getattr): keep both, inertly.
                push(object(ClassRef{"", "<call>"}, make_tuple({callable, args})));
            }
            break;
        }
        case NEWOBJ_EX: {
            ValuePtr kwargs = pop();
            ValuePtr args = pop();
            ValuePtr cls = pop();
            const auto* c = cls->as<ClassRef>();
            const auto* kw = kwargs->as<Dict>();
            if (c != nullptr && kw != nullptr && kw->items.empty()) push(call(*c, args, true));
            else push(object(c != nullptr ? *c : ClassRef{"", "<call>"}, make_tuple({cls, args, kwargs})));
            break;
        }
        case BUILD: build(); break;
        case BINPERSID: {
            ValuePtr pid = pop();
            if (!persistent_load_) fail("persistent id found but this pickle takes none");
            ValuePtr v = persistent_load_(pid);
            if (!v) fail("persistent id could not be resolved");
            push(std::move(v));
            break;
        }

        default:
            if (const char* name = refused_name(op))
                fail(std::string("unsupported opcode ") + name + " (" + hex_byte(op) + ")");
            fail("unknown opcode " + hex_byte(op));
    }
}

}  // namespace

ValuePtr unpickle(std::span<const std::byte> bytes, const std::string& source, const PersistentLoad& persistent_load,
                  const Limits& limits) {
    Machine m(bytes, source, persistent_load, limits);
    return m.run();
}

}  // namespace m2h::pickle
