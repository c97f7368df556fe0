// Host tests of the shared per-row math (dqn_targets_math.h), with no TensorFlow and no
// CUDA: the parts of the GPU path that can be checked on a machine without a GPU.
//  - an out-of-range action gives a NaN row and kBadAction, and nothing outside the row is
//    read or written (guard cells around every buffer);
//  - the partial max/argmax merges used by the warp-per-row CUDA kernel give the same
//    answer as a left-to-right scan for every way of splitting a row (first index on ties);
//  - the x86 SSE2 row scan equals the generic one on random rows with NaN/Inf.
// Exit status 0 only if every check passed.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "dqn_targets_math.h"

namespace {

int failures = 0;

void Check(bool ok, const char* what, int64_t detail = -1) {
  if (!ok) {
    ++failures;
    std::printf("FAILED: %s (%lld)\n", what, static_cast<long long>(detail));
  }
}

void TestBadActionRowStaysInBounds() {
  const int64_t A = 5;
  const float guard = 12345.0f;
  for (int64_t action : {-3, -1, 5, 6, 1000}) {
    // [guard, row..., guard] for every array the row function touches.
    std::vector<float> q(A + 2, 1.0f), q_next(A + 2, 2.0f), targets(A + 2, guard);
    q[0] = q[A + 1] = q_next[0] = q_next[A + 1] = std::nanf("");  // poison if read
    float loss = guard, delta = guard, q_next_max = guard;
    const tfdqn::TargetParams<float> p{0.99f, 1.0f, 1.0f};
    const auto status =
        tfdqn::DqnTargetsRow<float, bool, int64_t>(&q[1], &q_next[1], nullptr, action, 0.5f, false,
                                                   A, p, &targets[1], &loss, &delta, &q_next_max);
    Check(status == tfdqn::RowStatus::kBadAction, "bad action reported", action);
    Check(std::isnan(loss) && std::isnan(delta) && std::isnan(q_next_max),
          "bad action: NaN scalars", action);
    for (int64_t a = 1; a <= A; ++a)
      Check(std::isnan(targets[a]), "bad action: NaN targets row", action);
    Check(targets[0] == guard && targets[A + 1] == guard, "no write outside the row", action);
  }
  // In-range rows must not read the poisoned guards either.
  std::vector<float> q(7, 1.0f), q_next(7, 2.0f), targets(7, guard);
  q[0] = q[6] = q_next[0] = q_next[6] = std::nanf("");
  float loss, delta, q_next_max;
  const tfdqn::TargetParams<float> p{0.5f, 1.0f, 0.0f};
  const auto status = tfdqn::DqnTargetsRow<float, bool, int32_t>(
      &q[1], &q_next[1], nullptr, 4, 1.0f, false, 5, p, &targets[1], &loss, &delta, &q_next_max);
  Check(status == tfdqn::RowStatus::kOk, "in-range row ok");
  Check(delta == 1.0f && q_next_max == 2.0f && loss == 0.5f,
        "in-range row values");  // 1 + .5*2 - 1
  Check(targets[5] == 1.0f && targets[1] == 0.0f && targets[0] == guard && targets[6] == guard,
        "in-range targets row");
}

void TestPerRowDiscounts() {
  // Rows take discounts[i * stride]; out-of-range or NaN discounts are kBadDiscount with NaN
  // outputs, in range ones (0 and 1 included) give r + discount * max(q_next) - q[a].
  const float values[] = {0.0f, 1.0f, 0.25f, 1.5f, -0.5f, std::nanf("")};
  const tfdqn::TargetParams<float> batch{0.99f, 1.0f, 0.0f};
  const tfdqn::Discounts<float> per_row{values, 1};
  for (int64_t i = 0; i < 6; ++i) {
    const std::vector<float> q = {1.0f, 0.0f}, q_next = {2.0f, 4.0f};
    std::vector<float> targets(2);
    float loss, delta, q_next_max;
    const auto p = tfdqn::RowParams(batch, per_row, i);
    const auto status = tfdqn::DqnTargetsRow<float, bool, int32_t>(
        q.data(), q_next.data(), nullptr, 0, 0.5f, false, 2, p, targets.data(), &loss, &delta,
        &q_next_max);
    if (i < 3) {
      Check(status == tfdqn::RowStatus::kOk, "discount in [0, 1] accepted", i);
      Check(delta == 0.5f + values[i] * 4.0f - 1.0f, "row discount used", i);
    } else {
      Check(status == tfdqn::RowStatus::kBadDiscount, "bad discount reported", i);
      Check(std::isnan(loss) && std::isnan(targets[0]) && std::isnan(targets[1]),
            "bad discount: NaN row", i);
    }
  }
  // Stride 0 (a scalar tensor) and no values (the batch's discount) agree.
  const float scalar = 0.99f;
  Check(tfdqn::RowParams(batch, tfdqn::Discounts<float>{&scalar, 0}, 5).discount ==
            tfdqn::RowParams(batch, tfdqn::Discounts<float>{}, 5).discount,
        "scalar discount", 0);
}

void TestMergesMatchScan() {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-2, 2);
  for (int trial = 0; trial < 2000; ++trial) {
    const int A = 1 + trial % 70;
    std::vector<float> row(A);
    for (auto& v : row) v = static_cast<float>(small(rng));  // many ties
    tfdqn::RowArgMax<float> scan;
    tfdqn::RowMax<float> scan_max;
    for (int a = 0; a < A; ++a) {
      scan.Add(row[a], a);
      scan_max.Add(row[a]);
    }
    // The warp kernel's split: lane l takes a = l, l + 32, ...; merged in tree order.
    for (int lanes : {1, 2, 3, 8, 32}) {
      std::vector<tfdqn::RowArgMax<float>> part(lanes);
      std::vector<tfdqn::RowMax<float>> part_max(lanes);
      for (int a = 0; a < A; ++a) {
        part[a % lanes].Add(row[a], a);
        part_max[a % lanes].Add(row[a]);
      }
      for (int step = 1; step < lanes; step *= 2) {
        for (int l = 0; l + step < lanes; l += 2 * step) {
          part[l].Merge(part[l + step]);
          part_max[l].Merge(part_max[l + step]);
        }
      }
      Check(part[0].index == scan.index && part[0].value == scan.value, "argmax merge == scan", A);
      Check(part_max[0].value == scan_max.value, "max merge == scan", A);
    }
    int first = 0;
    for (int a = 1; a < A; ++a)
      if (row[a] > row[first]) first = a;
    Check(scan.index == first, "argmax takes the first index on ties", A);
  }
}

void TestScanVariantsAgree() {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (int trial = 0; trial < 5000; ++trial) {
    const int A = 1 + trial % 40;
    std::vector<float> row(A);
    for (auto& v : row) v = normal(rng);
    if (trial % 5 == 0) row[rng() % A] = (trial % 10 == 0) ? std::nanf("") : -INFINITY;
    // Generic template (what CUDA runs) vs the host build (SSE2 on x86).
    float m = row[0];
    bool finite = std::isfinite(row[0]);
    for (int a = 1; a < A; ++a) {
      m = tfdqn::Larger(m, row[a]);
      finite = finite && std::isfinite(row[a]);
    }
    const auto host = tfdqn::ScanRow<float, float>(row.data(), A);
    Check(host.finite == finite, "scan finiteness", trial);
    if (finite) Check(host.max == m, "scan max", trial);
    Check(tfdqn::RowFinite<float, float>(row.data(), A) == finite, "row finiteness", trial);
  }
}

}  // namespace

int main() {
  TestBadActionRowStaysInBounds();
  TestPerRowDiscounts();
  TestMergesMatchScan();
  TestScanVariantsAgree();
  std::printf("math_host_test: %s (%d failures)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
