#pragma once
// A test hook for the failure protocol: with M2H_TEST_FAIL=RANK:STAGE[:internal] in the environment, that rank
// fails at that stage (index, plan, move, finish), with an ordinary error or (":internal") an exception outside
// the protocol, so tests can show every rank stops promptly with one message. Inert without the variable.
#include <string_view>

namespace m2h {

void fault_point(int rank, std::string_view stage);

}  // namespace m2h
