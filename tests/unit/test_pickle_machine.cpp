#include <gtest/gtest.h>

#include "common/error.hpp"
#include "pickle/pickle_machine.hpp"
#include "torch_test_util.hpp"

using m2h::DType;
using m2h::Error;
using namespace m2h::pickle;
using namespace m2h::testutil;

namespace {

// A stand-in for the torch archive's loader that never trusts the pid's shape.
ValuePtr fake_storage(const ValuePtr& pid) {
    const auto* t = pid->as<Tuple>();
    if (t == nullptr || t->items.size() != 5) throw Error("fake", "bad pid");
    const auto* cls = t->items[1]->as<ClassRef>();
    const auto* key = t->items[2]->as<std::string>();
    const auto* loc = t->items[3]->as<std::string>();
    const auto* numel = t->items[4]->as<std::int64_t>();
    if (cls == nullptr || key == nullptr || loc == nullptr || numel == nullptr || *numel < 0) throw Error("fake", "bad pid");
    const auto dt = m2h::dtype_from_storage_class(cls->name);
    if (!dt) throw Error("fake", "bad storage class");
    const auto es = cls->name == "UntypedStorage" ? 1 : m2h::dtype_size(*dt);
    return make(StorageRef{*key, *dt, static_cast<std::uint64_t>(*numel) * es, *loc});
}

ValuePtr run(const ByteVec& b, const Limits& limits = {}) { return unpickle(b, "test.pkl", fake_storage, limits); }

std::string error_of(const ByteVec& b, const Limits& limits = {}) {
    try {
        (void)run(b, limits);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

std::int64_t as_int(const ValuePtr& v) {
    const auto* i = v->as<std::int64_t>();
    if (i == nullptr) throw std::runtime_error("not an int: " + v->kind());
    return *i;
}
const std::string& as_str(const ValuePtr& v) {
    const auto* s = v->as<std::string>();
    if (s == nullptr) throw std::runtime_error("not a str: " + v->kind());
    return *s;
}
const std::string& as_bytes(const ValuePtr& v) {
    const auto* b = v->as<m2h::pickle::Bytes>();
    if (b == nullptr) throw std::runtime_error("not bytes: " + v->kind());
    return b->data;
}
const std::vector<ValuePtr>& items(const ValuePtr& v) {
    if (const auto* t = v->as<Tuple>()) return t->items;
    if (const auto* l = v->as<List>()) return l->items;
    if (const auto* s = v->as<Set>()) return s->items;
    throw std::runtime_error("not a sequence: " + v->kind());
}
ValuePtr at(const ValuePtr& v, std::string_view key) {
    auto r = get(*v, key);
    if (!r) throw std::runtime_error("no key " + std::string(key));
    return r;
}

ByteVec one_value(const std::function<void(PickleBuilder&)>& body, int proto = 2) {
    PickleBuilder p;
    p.proto(proto);
    body(p);
    return p.stop().done();
}

// A torch-shaped pickle touching most protocol-2 opcodes.
ByteVec torch_like_pickle() {
    PickleBuilder p;
    p.proto(2).op('}').op('q').le(0, 1).mark();
    p.str("args").global("argparse", "Namespace").op('q').le(1, 1).op(')').op(0x81).op('}').mark();
    p.str("num_layers").integer(2).str("lr").op('G').ops({0x3F, 0x1A, 0x36, 0xE2, 0xEB, 0x1C, 0x43, 0x2D});
    p.str("big").op(0x8A).op(5).ops({0, 0, 0, 0x80, 0}).op('u').op('b');
    p.str("model").empty_ordered_dict().op('r').le(300, 4).mark();
    p.str("w").tensor_v2("BFloat16Storage", "0", 12, 0, {4, 3}, {3, 1});
    p.str("v").tensor_v2("BFloat16Storage", "0", 12, 6, {2, 3}, {3, 1});
    p.op('u').str("it").op('j').le(300, 4).str("n").op('N').op('u');
    return p.stop().done();
}

}  // namespace

TEST(PickleMachine, Protocol2DictOfScalars) {
    PickleBuilder p;
    p.proto(2).op('}').op('q').le(0, 1).mark();
    p.str("a").integer(5).str("b").op('J').le(0xFFFFFFFB, 4).str("c").op('M').le(4096, 2);
    p.str("d").op(0x88).str("e").op(0x89).str("f").op('N');
    p.str("g").op('G').ops({0x40, 0x08, 0, 0, 0, 0, 0, 0});
    p.str("h").op('G').ops({0xBF, 0xC0, 0, 0, 0, 0, 0, 0});
    p.op('u').stop();
    const auto v = run(p.done());
    const auto* d = v->as<Dict>();
    ASSERT_NE(d, nullptr);
    ASSERT_EQ(d->items.size(), 8u);
    EXPECT_EQ(as_str(d->items[0].first), "a");
    EXPECT_EQ(as_int(at(v, "a")), 5);
    EXPECT_EQ(as_int(at(v, "b")), -5);
    EXPECT_EQ(as_int(at(v, "c")), 4096);
    EXPECT_EQ(*at(v, "d")->as<bool>(), true);
    EXPECT_EQ(*at(v, "e")->as<bool>(), false);
    EXPECT_TRUE(at(v, "f")->is<None>());
    EXPECT_EQ(*at(v, "g")->as<double>(), 3.0);  // BINFLOAT is big-endian
    EXPECT_EQ(*at(v, "h")->as<double>(), -0.125);
    EXPECT_EQ(get(*v, "zz"), nullptr);
}

TEST(PickleMachine, MemoRefersToTheSameObject) {
    // MARK, [] BINPUT 0, APPEND 1 to it, BINGET 0, TUPLE: both items are the one list, holding the append.
    PickleBuilder p;
    p.proto(2).mark().op(']').op('q').le(0, 1).integer(1).op('a').op('h').le(0, 1).op('t').stop();
    const auto v = run(p.done());
    const auto& t = items(v);
    ASSERT_EQ(t.size(), 2u);
    EXPECT_EQ(t[0].get(), t[1].get());
    EXPECT_EQ(items(t[0]).size(), 1u);
    // DUP aliases too.
    const auto d = run(one_value([](PickleBuilder& q) { q.op(']').op('2').op(0x86); }));
    EXPECT_EQ(items(d)[0].get(), items(d)[1].get());
}

TEST(PickleMachine, Protocol4FramesMemoizeStackGlobal) {
    PickleBuilder body;
    body.sstr("collections").op(0x94).sstr("OrderedDict").op(0x94).op(0x93).op(0x94).op(')').op('R').op(0x94);
    body.mark();
    body.sstr("a").op(0x94).op('C').le(3, 1).raw("abc");
    body.sstr("b").op('B').le(2, 4).raw("xy");
    body.sstr("c").op(0x8D).le(3, 8).raw("uni");
    body.sstr("d").op(0x8E).le(1, 8).raw("z");
    body.sstr("e").op(0x96).le(2, 8).raw("ba");
    body.sstr("f").op(0x8F).mark().integer(1).integer(2).op(0x90);
    body.sstr("g").mark().integer(3).op(0x91);
    body.sstr("h").op('h').le(1, 1);
    body.sstr("i").op(0x8A).op(1).op(0xFF);
    body.op('u').stop();
    PickleBuilder p;
    p.proto(4).op(0x95).le(body.bytes().size(), 8).raw(as_string(body.bytes()));
    const auto v = run(p.done());
    ASSERT_TRUE(v->is<Dict>());
    EXPECT_EQ(as_bytes(at(v, "a")), "abc");
    EXPECT_EQ(as_bytes(at(v, "b")), "xy");
    EXPECT_EQ(as_str(at(v, "c")), "uni");
    EXPECT_EQ(as_bytes(at(v, "d")), "z");
    EXPECT_EQ(as_bytes(at(v, "e")), "ba");
    ASSERT_TRUE(at(v, "f")->is<Set>());
    EXPECT_EQ(items(at(v, "f")).size(), 2u);
    ASSERT_TRUE(at(v, "g")->is<Set>());
    EXPECT_EQ(as_int(items(at(v, "g"))[0]), 3);
    EXPECT_EQ(as_str(at(v, "h")), "OrderedDict");  // memo index 1 from MEMOIZE
    EXPECT_EQ(as_int(at(v, "i")), -1);
}

TEST(PickleMachine, Long1AndLong4) {
    const auto long1 = [](std::initializer_list<int> b) {
        return one_value([&](PickleBuilder& p) { p.op(0x8A).op(static_cast<std::uint8_t>(b.size())).ops(b); });
    };
    EXPECT_EQ(as_int(run(long1({}))), 0);
    EXPECT_EQ(as_int(run(long1({0xFF}))), -1);
    EXPECT_EQ(as_int(run(long1({0x80}))), -128);
    EXPECT_EQ(as_int(run(long1({0xFF, 0x00}))), 255);
    EXPECT_EQ(as_int(run(long1({0, 0, 0, 0x80, 0}))), std::int64_t{1} << 31);
    EXPECT_EQ(as_int(run(long1({0xFF, 0xFF, 0xFF, 0x7F, 0xFF}))), -(std::int64_t{1} << 31) - 1);
    EXPECT_EQ(as_int(run(long1({0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}))), INT64_MAX);
    EXPECT_EQ(as_int(run(long1({0, 0, 0, 0, 0, 0, 0, 0x80}))), INT64_MIN);
    EXPECT_EQ(as_int(run(long1({0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}))), -1);  // 9-byte -1
    EXPECT_EQ(as_int(run(long1({0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0x00}))), INT64_MAX);
    // 2^63 needs 9 bytes and does not fit in int64; neither does -2^63-1 nor 2^64.
    EXPECT_NE(error_of(long1({0, 0, 0, 0, 0, 0, 0, 0x80, 0})).find("int64"), std::string::npos);
    EXPECT_NE(error_of(long1({0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0xFF})).find("int64"), std::string::npos);
    EXPECT_NE(error_of(long1({0, 0, 0, 0, 0, 0, 0, 0, 1})).find("int64"), std::string::npos);
    EXPECT_NE(error_of(long1({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})).find("too large"), std::string::npos);
    EXPECT_EQ(as_int(run(one_value([](PickleBuilder& p) { p.op(0x8B).le(2, 4).ops({0x00, 0x80}); }))), -32768);
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op(0x8B).le(17, 4).raw(std::string(17, '\0')); })), "");
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op(0x8B).le(0xFFFFFFFF, 4); })), "");  // negative length
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op(0x8B).le(0x10000000, 4); })), "");   // huge length
}

TEST(PickleMachine, IntegerForms) {
    EXPECT_EQ(as_int(run(one_value([](PickleBuilder& p) { p.op('K').op(255); }))), 255);
    EXPECT_EQ(as_int(run(one_value([](PickleBuilder& p) { p.op('M').le(65535, 2); }))), 65535);
    EXPECT_EQ(as_int(run(one_value([](PickleBuilder& p) { p.op('J').le(0x80000000, 4); }))), INT32_MIN);
    EXPECT_EQ(as_int(run(one_value([](PickleBuilder& p) { p.op('J').le(70000, 4); }))), 70000);
}

TEST(PickleMachine, TextOpcodes) {
    EXPECT_EQ(*run(to_bytes("I01\n."))->as<bool>(), true);
    EXPECT_EQ(*run(to_bytes("I00\n."))->as<bool>(), false);
    EXPECT_EQ(as_int(run(to_bytes("I-42\n."))), -42);
    EXPECT_EQ(as_int(run(to_bytes("L123L\n."))), 123);
    EXPECT_EQ(as_int(run(to_bytes("L-9\n."))), -9);
    EXPECT_EQ(*run(to_bytes("F2.5\n."))->as<double>(), 2.5);
    EXPECT_NE(error_of(to_bytes("Iabc\n.")), "");
    EXPECT_NE(error_of(to_bytes("L99999999999999999999\n.")), "");
    EXPECT_NE(error_of(to_bytes("I12")), "");  // no newline
    const auto v = run(to_bytes("]p3\n0g3\n."));
    EXPECT_TRUE(v->is<List>());
    EXPECT_NE(error_of(to_bytes("]p-1\n.")), "");
    // Python 2 strings: UTF-8 when valid, else latin-1.
    EXPECT_EQ(as_str(run(to_bytes("U\x01\xe9."))), "\xc3\xa9");
    EXPECT_EQ(as_str(run(one_value([](PickleBuilder& p) { p.op('T').le(2, 4).raw("hi"); }))), "hi");
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op('T').le(0xFFFFFFFF, 4); })), "");
}

TEST(PickleMachine, TupleListDictForms) {
    EXPECT_EQ(items(run(one_value([](PickleBuilder& p) { p.integer(1).integer(2).integer(3).op(0x87); }))).size(), 3u);
    EXPECT_EQ(items(run(one_value([](PickleBuilder& p) { p.integer(1).op(0x85); }))).size(), 1u);
    EXPECT_EQ(items(run(one_value([](PickleBuilder& p) { p.op(')'); }))).size(), 0u);
    EXPECT_EQ(items(run(one_value([](PickleBuilder& p) { p.mark().integer(1).integer(2).op('l'); }))).size(), 2u);
    const auto d = run(one_value([](PickleBuilder& p) { p.mark().str("k").integer(1).str("j").integer(2).op('d'); }));
    EXPECT_EQ(as_int(at(d, "j")), 2);
    // POP_MARK discards up to the mark; POP with nothing above a mark discards the mark (as CPython does).
    EXPECT_EQ(as_int(run(one_value([](PickleBuilder& p) { p.integer(9).mark().integer(1).integer(2).op('1'); }))), 9);
    EXPECT_EQ(as_int(run(one_value([](PickleBuilder& p) { p.mark().op('0').integer(5); }))), 5);
    EXPECT_EQ(as_int(run(one_value([](PickleBuilder& p) { p.integer(4).integer(5).op('0'); }))), 4);
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.mark().integer(1).op('d'); })), "");  // odd DICT
}

TEST(PickleMachine, SetitemReplacesAnExistingKey) {
    const auto v = run(one_value([](PickleBuilder& p) {
        p.op('}').str("a").integer(1).op('s').str("b").integer(7).op('s').str("a").integer(2).op('s');
        p.integer(1).str("x").op('s').op(0x88).str("y").op('s');  // True == 1 as a dict key
    }));
    const auto& d = v->as<Dict>()->items;
    ASSERT_EQ(d.size(), 3u);
    EXPECT_EQ(as_str(d[0].first), "a");
    EXPECT_EQ(as_int(d[0].second), 2);
    EXPECT_EQ(as_str(d[2].second), "y");
}

TEST(PickleMachine, EveryTruncationIsAnError) {
    const auto full = torch_like_pickle();
    ASSERT_NO_THROW(run(full));
    for (std::size_t n = 0; n < full.size(); ++n) {
        const ByteVec cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
        EXPECT_THROW(run(cut), Error) << "truncated to " << n << " bytes";
    }
}

TEST(PickleMachine, EveryByteFlipIsErrorOrSuccess) {
    const auto full = torch_like_pickle();
    std::size_t errors = 0, total = 0;
    for (std::size_t i = 0; i < full.size(); ++i) {
        for (const std::uint8_t x : {0xFF, 0x80, 0x01, 0x10}) {
            auto bad = full;
            bad[i] ^= static_cast<std::byte>(x);
            ++total;
            try {
                (void)run(bad);
            } catch (const Error&) {
                ++errors;
            } catch (const std::exception& e) {
                ADD_FAILURE() << "byte " << i << ": unexpected exception " << e.what();
            }
        }
    }
    EXPECT_GT(errors, total / 4);
}

TEST(PickleMachine, UnsetMemoIndexIsError) {
    const auto msg = error_of(one_value([](PickleBuilder& p) { p.op('h').op(5); }));
    EXPECT_NE(msg.find("memo index 5"), std::string::npos) << msg;
    EXPECT_NE(msg.find("at offset 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("test.pkl"), std::string::npos) << msg;
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op('j').le(70000, 4); })), "");
}

TEST(PickleMachine, MemoSizeIsCapped) {
    Limits lim;
    lim.max_memo = 2;
    const auto b = one_value([](PickleBuilder& p) { p.op('N').op('q').op(0).op('q').op(0).op('q').op(1).op('q').op(2); });
    EXPECT_NE(error_of(b, lim).find("memo"), std::string::npos);
    const auto ok = one_value([](PickleBuilder& p) { p.op('N').op('q').op(0).op('q').op(0).op('q').op(1); });
    EXPECT_EQ(error_of(ok, lim), "");
}

TEST(PickleMachine, UnknownAndRefusedOpcodes) {
    auto msg = error_of(one_value([](PickleBuilder& p) { p.op(0xFF); }));
    EXPECT_NE(msg.find("unknown opcode 0xff at offset 2"), std::string::npos) << msg;
    msg = error_of(one_value([](PickleBuilder& p) { p.op(0x00); }));
    EXPECT_NE(msg.find("unknown opcode 0x00"), std::string::npos) << msg;
    for (const int op : std::initializer_list<int>{'P', 0x82, 0x83, 0x84, 'i', 'o', 'S', 'V', 0x97, 0x98}) {
        msg = error_of(one_value([&](PickleBuilder& p) { p.op(static_cast<std::uint8_t>(op)).raw("x\nx\n"); }));
        EXPECT_NE(msg.find("unsupported opcode"), std::string::npos) << int(op) << ": " << msg;
    }
}

TEST(PickleMachine, ProtocolAboveFiveIsError) {
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op('N'); }, 6)).find("protocol 6"), std::string::npos);
    EXPECT_EQ(error_of(one_value([](PickleBuilder& p) { p.op('N'); }, 5)), "");
}

TEST(PickleMachine, MarkAndStackDiscipline) {
    for (const int op : std::initializer_list<int>{'t', 'e', 'u', 'd', 'l', 0x91, 0x90, '1'}) {
        const auto msg = error_of(one_value([&](PickleBuilder& p) { p.op(']').op(static_cast<std::uint8_t>(op)); }));
        EXPECT_NE(msg.find("MARK"), std::string::npos) << int(op) << ": " << msg;
    }
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op('0'); })).find("underflow"), std::string::npos);
    EXPECT_NE(error_of(to_bytes("\x80\x02.")).find("underflow"), std::string::npos);
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op(')').op('R'); })).find("underflow"), std::string::npos);
    // Items below the innermost mark are out of reach.
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.integer(1).mark().op(0x85); })).find("underflow"),
              std::string::npos);
    EXPECT_NE(error_of(ByteVec{}).find("before STOP"), std::string::npos);
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.integer(1).integer(2).op('a'); })).find("APPEND"), std::string::npos);
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op(']').integer(1).integer(2).op('s'); })).find("SETITEM"),
              std::string::npos);
    // FRAME must not claim more than is there.
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op(0x95).le(1000, 8).op('N'); }, 4)).find("frame"),
              std::string::npos);
}

TEST(PickleMachine, NestingBombsAreErrorsNotCrashes) {
    // TUPLE1 wraps the top in a new tuple: one byte per level with a stack of one.
    ByteVec bomb = to_bytes("\x80\x02]");
    bomb.insert(bomb.end(), 200000, std::byte{0x85});
    bomb.push_back(std::byte{'.'});
    EXPECT_NE(error_of(bomb).find("nested deeper"), std::string::npos);

    // Lists appended into lists.
    ByteVec lists = to_bytes("\x80\x02");
    lists.insert(lists.end(), 20001, std::byte{']'});
    lists.insert(lists.end(), 20000, std::byte{'a'});
    lists.push_back(std::byte{'.'});
    EXPECT_NE(error_of(lists).find("nested deeper"), std::string::npos);

    // Marks and DUPs only grow the stack.
    ByteVec marks = to_bytes("\x80\x02");
    marks.insert(marks.end(), 1'000'001, std::byte{'('});
    EXPECT_NE(error_of(marks).find("stack deeper"), std::string::npos);
    ByteVec dups = to_bytes("\x80\x02N");
    dups.insert(dups.end(), 1'000'001, std::byte{'2'});
    EXPECT_NE(error_of(dups).find("stack deeper"), std::string::npos);

    Limits lim;
    lim.max_depth = 100;
    ByteVec small = to_bytes("\x80\x02]");
    small.insert(small.end(), 99, std::byte{0x85});
    small.push_back(std::byte{'.'});
    EXPECT_EQ(error_of(small, lim), "");
    small.insert(small.end() - 1, std::byte{0x85});
    EXPECT_NE(error_of(small, lim), "");
}

TEST(PickleMachine, DeepTreesAreFreedWithoutRecursion) {
    // Just under the default limit: the machine builds it, and dropping it must not blow the C++ stack.
    ByteVec deep = to_bytes("\x80\x02N");
    deep.insert(deep.end(), 9999, std::byte{0x85});
    deep.push_back(std::byte{'.'});
    ValuePtr v = run(deep);
    std::size_t depth = 0;
    for (ValuePtr p = v; p->is<Tuple>(); p = items(p)[0]) ++depth;
    EXPECT_EQ(depth, 9999u);
    v.reset();

    // Far deeper than any stack would survive with recursive destruction.
    ValuePtr chain = make(None{});
    for (int i = 0; i < 1'000'000; ++i) chain = make(List{{std::move(chain)}});
    ASSERT_TRUE(chain->is<List>());
    chain.reset();
    EXPECT_EQ(chain, nullptr);
}

TEST(PickleMachine, SelfReferenceIsRefused) {
    // l = []; l.append(l)
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op(']').op('q').op(0).op('h').op(0).op('a'); })).find("itself"),
              std::string::npos);
    // l = []; l.append((l,)): l is already nested in the tuple when it changes.
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op(']').op('q').op(0).op('h').op(0).op(0x85).op('a'); }))
                  .find("after being nested"),
              std::string::npos);
}

// A global outside the allow-list is refused before anything could use it; nothing is ever called either way.
TEST(PickleMachine, DangerousGlobalsAreRefused) {
    TempDir dir;
    const auto marker = dir.path() / "pwned";
    const std::string cmd = "touch '" + marker.string() + "'";
    const std::pair<const char*, const char*> names[] = {
        {"os", "system"}, {"posix", "system"}, {"builtins", "eval"}, {"__builtin__", "exec"}, {"subprocess", "Popen"},
        {"torch", "load"}, {"numpy", "load"}, {"x", "Y"}};
    for (const auto& [mod, name] : names) {
        const auto err = error_of(one_value([&](PickleBuilder& p) { p.global(mod, name).str(cmd).op(0x85).op('R'); }));
        EXPECT_NE(err.find("refusing global"), std::string::npos) << mod << "." << name << ": " << err;
        EXPECT_NE(err.find(name), std::string::npos) << err;
        EXPECT_NE(err.find("test.pkl"), std::string::npos) << err;
        const auto err4 = error_of(one_value([&](PickleBuilder& p) {
            p.str(mod).str(name).op(0x93).op(')').op(0x81);
        }, 4));
        EXPECT_NE(err4.find("refusing global"), std::string::npos) << err4;
    }
    EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST(PickleMachine, NameNormalisation) {
    const auto s = run(one_value([](PickleBuilder& p) {
        p.global("__builtin__", "set").op(']').mark().integer(1).integer(2).op('e').op(0x85).op('R');
    }));
    ASSERT_TRUE(s->is<Set>());
    EXPECT_EQ(items(s).size(), 2u);
    const auto fs = run(one_value([](PickleBuilder& p) { p.global("__builtin__", "frozenset").op(')').op('R'); }));
    EXPECT_TRUE(fs->is<Set>());
    const auto c = run(one_value([](PickleBuilder& p) { p.global("copy_reg", "_reconstructor").op(')').op('R'); }));
    EXPECT_EQ(c->as<Object>()->cls.qualified(), "copyreg._reconstructor");
    const auto n = run(one_value([](PickleBuilder& p) { p.global("numpy._core.multiarray", "_reconstruct").op(')').op('R'); }));
    EXPECT_EQ(n->as<Object>()->cls.qualified(), "numpy.core.multiarray._reconstruct");
    const auto path = run(one_value([](PickleBuilder& p) {
        p.global("pathlib._local", "PosixPath").mark().str("/").str("tmp").str("ckpt").op('t').op('R');
    }));
    EXPECT_EQ(as_str(path), "/tmp/ckpt");
    const auto rel = run(one_value([](PickleBuilder& p) { p.global("pathlib", "PurePosixPath").mark().str("a").str("b").op('t').op('R'); }));
    EXPECT_EQ(as_str(rel), "a/b");
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.global("pathlib", "PosixPath").integer(1).op(0x85).op('R'); })), "");
}

TEST(PickleMachine, RebuildTensorV2AndParameter) {
    const auto v = run(one_value([](PickleBuilder& p) { p.tensor_v2("FloatStorage", "7", 12, 2, {2, 3}, {3, 1}); }));
    const auto* t = v->as<TensorRef>();
    ASSERT_NE(t, nullptr) << v->kind();
    EXPECT_EQ(t->storage.key, "7");
    EXPECT_EQ(t->storage.nbytes, 48u);
    EXPECT_EQ(t->storage.location, "cpu");
    EXPECT_EQ(t->dtype, DType::F32);
    EXPECT_EQ(t->storage_offset, 2u);
    EXPECT_EQ(t->size, (std::vector<std::uint64_t>{2, 3}));
    EXPECT_EQ(t->stride, (std::vector<std::uint64_t>{3, 1}));

    const auto param = run(one_value([](PickleBuilder& p) {
        p.global("torch._utils", "_rebuild_parameter");
        p.tensor_v2("HalfStorage", "0", 4, 0, {4}, {1}).op(0x88).empty_ordered_dict().op(0x87).op('R');
    }));
    ASSERT_TRUE(param->is<TensorRef>());
    EXPECT_EQ(param->as<TensorRef>()->dtype, DType::F16);
    const auto with_state = run(one_value([](PickleBuilder& p) {
        p.global("torch._utils", "_rebuild_parameter_with_state").mark();
        p.tensor_v2("HalfStorage", "0", 4, 0, {4}, {1}).op(0x88).empty_ordered_dict().op('}').op('t').op('R');
    }));
    EXPECT_TRUE(with_state->is<TensorRef>());
    const auto v1 = run(one_value([](PickleBuilder& p) {
        p.global("torch._utils", "_rebuild_tensor").mark().storage("LongStorage", "1", 3).integer(0).int_tuple({3}).int_tuple({1});
        p.op('t').op('R');
    }));
    EXPECT_EQ(v1->as<TensorRef>()->dtype, DType::I64);
    // 0-d tensor
    const auto scalar = run(one_value([](PickleBuilder& p) { p.tensor_v2("LongStorage", "0", 1, 0, {}, {}); }));
    EXPECT_TRUE(scalar->as<TensorRef>()->size.empty());
    // Empty metadata dict is fine; a set conj/neg flag is not.
    const auto with_meta = [](bool flag) {
        return one_value([flag](PickleBuilder& p) {
            p.global("torch._utils", "_rebuild_tensor_v2").mark().storage("FloatStorage", "0", 1).integer(0);
            p.int_tuple({1}).int_tuple({1}).op(0x89).empty_ordered_dict().op('}');
            if (flag) p.str("conj").op(0x88).op('s');
            p.op('t').op('R');
        });
    };
    EXPECT_EQ(error_of(with_meta(false)), "");
    EXPECT_NE(error_of(with_meta(true)).find("metadata"), std::string::npos);
}

TEST(PickleMachine, RebuildTensorV3TakesItsDtype) {
    const auto v = run(one_value([](PickleBuilder& p) { p.tensor_v3("float8_e4m3fn", "0", 6, 1, {5}, {1}); }));
    const auto* t = v->as<TensorRef>();
    ASSERT_NE(t, nullptr) << v->kind();
    EXPECT_EQ(t->dtype, DType::F8_E4M3);
    EXPECT_EQ(t->storage.dtype, DType::U8);
    EXPECT_EQ(t->storage.nbytes, 6u);
    EXPECT_EQ(t->storage_offset, 1u);
    const auto u16 = run(one_value([](PickleBuilder& p) { p.tensor_v3("uint16", "0", 4, 0, {2}, {1}); }));
    EXPECT_EQ(u16->as<TensorRef>()->dtype, DType::U16);
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.tensor_v3("complex32", "0", 4, 0, {1}, {1}); })).find("dtype"),
              std::string::npos);
}

TEST(PickleMachine, RebuildTensorValidatesArguments) {
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.tensor_v2("FloatStorage", "0", 4, 0, {-1}, {1}); })).find("negative"),
              std::string::npos);
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.tensor_v2("FloatStorage", "0", 4, -1, {1}, {1}); })).find("negative"),
              std::string::npos);
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.tensor_v2("FloatStorage", "0", 6, 0, {2, 3}, {1}); })).find("dims"),
              std::string::npos);
    // Storage argument that is not a storage.
    const auto not_storage = one_value([](PickleBuilder& p) {
        p.global("torch._utils", "_rebuild_tensor_v2").mark().op('N').integer(0).int_tuple({1}).int_tuple({1});
        p.op(0x89).empty_ordered_dict().op('t').op('R');
    });
    EXPECT_NE(error_of(not_storage).find("expected a storage"), std::string::npos);
    // Wrong arity.
    const auto arity = one_value([](PickleBuilder& p) {
        p.global("torch._utils", "_rebuild_tensor_v2").mark().storage("FloatStorage", "0", 1).integer(0).int_tuple({1});
        p.int_tuple({1}).op(0x89).op('t').op('R');
    });
    EXPECT_NE(error_of(arity).find("5 arguments"), std::string::npos);
    // Size that is a str, args that are not a tuple.
    const auto bad_size = one_value([](PickleBuilder& p) {
        p.global("torch._utils", "_rebuild_tensor_v2").mark().storage("FloatStorage", "0", 1).integer(0).str("x");
        p.int_tuple({1}).op(0x89).empty_ordered_dict().op('t').op('R');
    });
    EXPECT_NE(error_of(bad_size), "");
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.global("torch._utils", "_rebuild_tensor_v2").op('N').op('R'); })), "");
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.global("torch._utils", "_rebuild_parameter").op(')').op('R'); })), "");
}

TEST(PickleMachine, TorchGlobals) {
    EXPECT_EQ(*run(one_value([](PickleBuilder& p) { p.global("torch", "bfloat16"); }))->as<DType>(), DType::BF16);
    EXPECT_EQ(*run(one_value([](PickleBuilder& p) { p.global("torch", "float32"); }))->as<DType>(), DType::F32);
    const auto storage_cls = run(one_value([](PickleBuilder& p) { p.global("torch", "BFloat16Storage"); }));
    EXPECT_EQ(storage_cls->as<ClassRef>()->qualified(), "torch.BFloat16Storage");
    const auto size = run(one_value([](PickleBuilder& p) { p.global("torch", "Size").integer(2).integer(3).op(0x86).op(0x85).op('R'); }));
    ASSERT_TRUE(size->is<Tuple>());
    EXPECT_EQ(as_int(items(size)[1]), 3);
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.global("torch", "Size").str("x").op(0x85).op(0x85).op('R'); })), "");
    const auto layout = run(one_value([](PickleBuilder& p) { p.global("torch.serialization", "_get_layout").str("torch.strided").op(0x85).op('R'); }));
    EXPECT_EQ(as_str(layout), "torch.strided");
    const auto device = run(one_value([](PickleBuilder& p) { p.global("torch", "device").str("cuda").integer(0).op(0x86).op('R'); }));
    EXPECT_EQ(device->kind(), "object torch.device");
}

TEST(PickleMachine, SignalMembersAreDataOtherSignalGlobalsAreRefused) {
    // Python 3.11.2 pickles Megatron's args.exit_signal (signal.Signals.SIGTERM) as the global signal.SIGTERM.
    const auto sigterm = run(one_value([](PickleBuilder& p) { p.global("signal", "SIGTERM"); }));
    EXPECT_EQ(sigterm->as<ClassRef>()->qualified(), "signal.SIGTERM");
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.global("signal", "signal"); })).find("refusing global"),
              std::string::npos);
}

TEST(PickleMachine, OrderedDictIgnoresBuild) {
    const auto v = run(one_value([](PickleBuilder& p) {
        p.empty_ordered_dict().mark().str("b").integer(1).str("a").integer(2).op('u');
        p.op('}').str("_metadata").op('}').op('s').op('b');
    }));
    const auto* d = v->as<Dict>();
    ASSERT_NE(d, nullptr);
    ASSERT_EQ(d->items.size(), 2u);
    EXPECT_EQ(as_str(d->items[0].first), "b");  // insertion order kept
    EXPECT_EQ(get(*v, "_metadata"), nullptr);
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.global("collections", "OrderedDict").integer(1).op(0x85).op('R'); })), "");
}

TEST(PickleMachine, BytesForms) {
    const auto enc = [](std::string_view text, std::string_view encoding) {
        return one_value([=](PickleBuilder& p) { p.global("_codecs", "encode").str(text).str(encoding).op(0x86).op('R'); });
    };
    EXPECT_EQ(as_bytes(run(enc(std::string_view("\xc3\xa9\x00\xc3\xbf\x41", 6), "latin1"))), std::string("\xe9\x00\xff\x41", 4));
    EXPECT_EQ(as_bytes(run(enc("ab", "latin-1"))), "ab");
    EXPECT_NE(error_of(enc("\xc4\x80", "latin1")).find("U+00FF"), std::string::npos);
    EXPECT_NE(error_of(enc("ab", "utf-8")).find("encoding"), std::string::npos);
    EXPECT_EQ(as_bytes(run(one_value([](PickleBuilder& p) { p.global("__builtin__", "bytes").op(')').op('R'); }))), "");
    const auto ba = run(one_value([](PickleBuilder& p) {
        p.global("__builtin__", "bytearray").global("_codecs", "encode").str("ab").str("latin1").op(0x86).op('R');
        p.op(0x85).op('R');
    }));
    EXPECT_EQ(as_bytes(ba), "ab");
    const auto bio = run(one_value([](PickleBuilder& p) {
        p.global("_io", "BytesIO").op(')').op(0x81).mark().op('C').op(3).raw("abc").integer(0).op('N').op('t').op('b');
    }));
    EXPECT_EQ(as_bytes(bio), "abc");
}

TEST(PickleMachine, ObjectsKeepTheirState) {
    const auto ns = run(one_value([](PickleBuilder& p) {
        p.global("argparse", "Namespace").op(')').op(0x81).op('}').mark().str("num_layers").integer(2);
        p.str("bf16").op(0x88).op('u').op('b');
        p.op('}').str("extra").integer(1).op('s').op('b');  // a second BUILD merges
    }));
    EXPECT_EQ(ns->kind(), "object argparse.Namespace");
    ASSERT_NE(attributes(*ns), nullptr);
    EXPECT_EQ(as_int(at(ns, "num_layers")), 2);
    EXPECT_EQ(*at(ns, "bf16")->as<bool>(), true);
    EXPECT_EQ(as_int(at(ns, "extra")), 1);
    const auto sn = run(one_value([](PickleBuilder& p) {
        p.global("types", "SimpleNamespace").op(')').op('R').op('}').str("alpha").integer(1).op('s').op('b');
    }));
    EXPECT_EQ(as_int(at(sn, "alpha")), 1);
    // (dict-or-None, slots dict) state of a dataclass with __slots__.
    const auto slots = run(one_value([](PickleBuilder& p) {
        p.global("megatron.core.optimizer", "OptimizerConfig").op(')').op(0x81).op('N');
        p.op('}').str("lr").integer(3).op('s').op(0x86).op('b');
    }));
    EXPECT_EQ(as_int(at(slots, "lr")), 3);
    // getattr is never resolved.
    const auto ga = run(one_value([](PickleBuilder& p) {
        p.global("__builtin__", "getattr").global("megatron.core.enums", "ModelType").str("encoder_or_decoder");
        p.op(0x86).op('R');
    }));
    const auto* o = ga->as<Object>();
    ASSERT_NE(o, nullptr);
    EXPECT_EQ(o->cls.qualified(), "builtins.getattr");
    EXPECT_EQ(items(o->args)[0]->as<ClassRef>()->name, "ModelType");
    // Items added to objects are recorded; raw state is kept.
    const auto raw = run(one_value([](PickleBuilder& p) {
        p.global("megatron.x", "Y").op(')').op(0x81).integer(5).op('b').str("k").integer(1).op('s').integer(7).op('a');
    }));
    EXPECT_EQ(as_int(raw->as<Object>()->state), 5);
    EXPECT_EQ(raw->as<Object>()->dict_items.size(), 1u);
    EXPECT_EQ(raw->as<Object>()->list_items.size(), 1u);
    EXPECT_EQ(attributes(*raw), nullptr);
    EXPECT_EQ(attributes(*run(one_value([](PickleBuilder& p) { p.op('}'); }))), nullptr);
}

TEST(PickleMachine, PersistentIds) {
    const auto b = one_value([](PickleBuilder& p) { p.mark().str("storage").op('t').op('Q'); });
    EXPECT_NE(error_of(b).find("bad pid"), std::string::npos);  // the loader's own error passes through
    try {
        (void)unpickle(b, "x.pkl", nullptr);
        FAIL() << "persistent id without a loader was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("persistent id"), std::string::npos);
    }
    const auto null_loader = [](const ValuePtr&) { return ValuePtr{}; };
    EXPECT_THROW(unpickle(b, "x.pkl", null_loader), Error);
}

TEST(PickleMachine, StringsMustBeUtf8) {
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op('X').le(1, 4).raw("\xff"); })).find("UTF-8"), std::string::npos);
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op('X').le(2, 4).raw("\xc0\x80"); })), "");  // overlong
    EXPECT_EQ(as_str(run(one_value([](PickleBuilder& p) { p.str("h\xc3\xa9"); }))), "h\xc3\xa9");
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op('X').le(0xFFFFFFF0, 4).raw("ab"); })).find("truncated"),
              std::string::npos);
    EXPECT_NE(error_of(one_value([](PickleBuilder& p) { p.op(0x8E).le(~std::uint64_t{0}, 8); })).find("truncated"),
              std::string::npos);
    EXPECT_NE(error_of(to_bytes("\x80\x02" "cos\n")), "");  // GLOBAL without its second line
}

TEST(PickleMachine, CPythonPicklesAtProtocols2To5) {
    TempDir dir;
    ASSERT_EQ(run_samples(dir.path(), true), 0) << "tests/fixtures/torch_save_samples.py failed";
    for (const char* name : {"plain_p2.pkl", "plain_p4.pkl", "plain_p5.pkl"}) {
        SCOPED_TRACE(name);
        const auto v = run(to_bytes(read_whole(dir.path() / name)));
        ASSERT_TRUE(v->is<Dict>());
        EXPECT_EQ(as_str(v->as<Dict>()->items.front().first), "small");
        EXPECT_EQ(as_int(at(v, "small")), 7);
        EXPECT_EQ(as_int(at(v, "medium")), 300);
        EXPECT_EQ(as_int(at(v, "big")), 70000);
        EXPECT_EQ(as_int(at(v, "neg")), -5);
        EXPECT_EQ(as_int(at(v, "int32_min")), INT32_MIN);
        EXPECT_EQ(as_int(at(v, "beyond_int32")), std::int64_t{1} << 31);
        EXPECT_EQ(as_int(at(v, "below_int32")), -(std::int64_t{1} << 31) - 1);
        EXPECT_EQ(as_int(at(v, "int64_max")), INT64_MAX);
        EXPECT_EQ(as_int(at(v, "int64_min")), INT64_MIN);
        EXPECT_EQ(*at(v, "float")->as<double>(), 3.0);
        EXPECT_EQ(*at(v, "neg_float")->as<double>(), -0.125);
        EXPECT_EQ(*at(v, "true")->as<bool>(), true);
        EXPECT_EQ(*at(v, "false")->as<bool>(), false);
        EXPECT_TRUE(at(v, "none")->is<None>());
        EXPECT_EQ(as_str(at(v, "text")), "h\xc3\xa9llo w\xc3\xb6rld");
        EXPECT_EQ(as_str(at(v, "long_text")), std::string(300, 'x'));
        EXPECT_EQ(as_bytes(at(v, "bytes")), std::string("\x00\x01\xfe\xff", 4));
        EXPECT_EQ(as_bytes(at(v, "empty_bytes")), "");
        const auto& tup = items(at(v, "tuple"));
        ASSERT_EQ(tup.size(), 4u);
        EXPECT_TRUE(at(v, "tuple")->is<Tuple>());
        EXPECT_EQ(as_str(tup[1]), "a");
        EXPECT_TRUE(tup[2]->is<None>());
        EXPECT_EQ(*tup[3]->as<double>(), 2.5);
        const auto& lst = items(at(v, "list"));
        ASSERT_EQ(lst.size(), 1500u);
        for (std::size_t i = 0; i < lst.size(); ++i) ASSERT_EQ(as_int(lst[i]), static_cast<std::int64_t>(i));
        const auto& nested = items(at(v, "nested"));
        EXPECT_EQ(as_str(at(items(items(nested[1])[1])[1], "k")), "v");
        ASSERT_TRUE(at(v, "set")->is<Set>());
        EXPECT_EQ(items(at(v, "set")).size(), 3u);
        ASSERT_TRUE(at(v, "frozenset")->is<Set>());
        EXPECT_EQ(as_str(items(at(v, "frozenset"))[0]), "x");
        const auto& shared = items(at(v, "shared"));
        EXPECT_EQ(shared[0].get(), shared[1].get());
        const auto* many = at(v, "many_keys")->as<Dict>();
        ASSERT_NE(many, nullptr);
        ASSERT_EQ(many->items.size(), 1200u);
        EXPECT_EQ(as_str(many->items[1199].first), "k1199");
        EXPECT_EQ(as_int(many->items[1199].second), 1199);
    }
}

TEST(PickleValue, KindAndLookup) {
    EXPECT_EQ(make(std::int64_t{1})->kind(), "int");
    EXPECT_EQ(make(std::string("x"))->kind(), "str");
    EXPECT_EQ(make(None{})->kind(), "None");
    EXPECT_EQ(make(Dict{})->kind(), "dict");
    EXPECT_EQ(make(DType::BF16)->kind(), "dtype bfloat16");
    EXPECT_EQ(make(ClassRef{"os", "system"})->kind(), "global os.system");
    Dict d;
    d.items.emplace_back(make(std::int64_t{1}), make(std::string("int key")));
    d.items.emplace_back(make(std::string("k")), make(std::int64_t{2}));
    const auto v = make(std::move(d));
    EXPECT_EQ(as_int(get(*v, "k")), 2);
    EXPECT_EQ(get(*v, "1"), nullptr);
    EXPECT_EQ(get(*make(std::int64_t{3}), "k"), nullptr);
}
