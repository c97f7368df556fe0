// Host tests of the sum tree (sum_tree.h) that prioritized replay draws with, against a
// plain linear scan: find() on random and boundary values, zero priorities never drawn,
// draw frequencies proportional to priority, no rounding drift after many updates, and
// clear errors on bad input. Exit status 0 only if every check passed.
#include "sum_tree.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <vector>

namespace {

int failures = 0;

void Check(bool ok, const char* what, double detail = 0) {
  if (!ok) {
    ++failures;
    std::printf("FAILED: %s (%g)\n", what, detail);
  }
}

// The leaf a linear scan finds: first i with u < prefix_{i+1}, skipping zero leaves.
int64_t ScanFind(const std::vector<double>& p, double u) {
  double prefix = 0;
  int64_t last_positive = -1;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0) continue;
    last_positive = static_cast<int64_t>(i);
    if (u < prefix + p[i]) return static_cast<int64_t>(i);
    prefix += p[i];
  }
  return last_positive;  // u at or past the total
}

void TestFindMatchesALinearScan() {
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int64_t size : {1, 2, 3, 5, 8, 13, 100, 1000}) {
    tfdqn::SumTree tree(size);
    std::vector<double> p(size);
    for (int64_t i = 0; i < size; ++i) {
      // integers (exact sums, so boundaries are exact) with about a third zeros
      p[i] = (rng() % 3 == 0) ? 0.0 : static_cast<double>(1 + rng() % 7);
      tree.set(i, p[i]);
    }
    if (tree.total() <= 0) {
      tree.set(size - 1, 1.0);
      p[size - 1] = 1.0;
    }
    double sum = 0;
    for (double v : p) sum += v;
    Check(tree.total() == sum, "total is the sum", size);
    std::vector<double> us = {0.0, tree.total(), tree.total() * (1 - 1e-16)};
    double prefix = 0;
    for (double v : p) {  // every boundary, and just below it
      prefix += v;
      us.push_back(prefix);
      us.push_back(std::nextafter(prefix, 0.0));
    }
    for (int k = 0; k < 2000; ++k) us.push_back(unit(rng) * tree.total());
    for (double u : us) {
      const int64_t got = tree.find(u), want = ScanFind(p, u);
      Check(got == want, "find equals the linear scan", u);
      Check(p[got] > 0, "find never returns a zero leaf", u);
    }
  }
}

void TestDrawFrequenciesFollowPriorities() {
  const std::vector<double> p = {0.0, 1.0, 0.0, 2.0, 5.0, 0.0, 0.5, 1.5};
  tfdqn::SumTree tree(static_cast<int64_t>(p.size()));
  for (size_t i = 0; i < p.size(); ++i) tree.set(static_cast<int64_t>(i), p[i]);
  std::mt19937_64 rng(2);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const int draws = 200000;
  std::vector<int> counts(p.size(), 0);
  for (int k = 0; k < draws; ++k) ++counts[tree.find(unit(rng) * tree.total())];
  for (size_t i = 0; i < p.size(); ++i) {
    const double expected = draws * p[i] / tree.total();
    const double sd = std::sqrt(expected * (1 - p[i] / tree.total())) + 1e-9;
    Check(p[i] > 0 ? std::fabs(counts[i] - expected) < 5 * sd : counts[i] == 0,
          "draw frequency within 5 sd of p_i / total", static_cast<double>(i));
  }
}

void TestNoDriftAfterManyUpdates() {
  const int64_t size = 4097;
  tfdqn::SumTree tree(size);
  std::vector<double> p(size, 0.0);
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int k = 0; k < 1000000; ++k) {
    const int64_t i = static_cast<int64_t>(rng() % size);
    p[i] = unit(rng) < 0.1 ? 0.0 : std::pow(unit(rng), 3) * 1e3;  // many scales, zeros
    tree.set(i, p[i]);
  }
  for (int64_t i = 0; i < size; ++i) tree.set(i, 0.0);  // everything back to zero
  Check(tree.total() == 0.0, "all-zero tree sums to exactly 0 after 1M updates", tree.total());
  tree.set(7, 2.5);
  Check(tree.total() == 2.5 && tree.find(0.0) == 7 && tree.find(2.4) == 7,
        "a single leaf after many updates", tree.total());
}

void TestBadInputThrows() {
  tfdqn::SumTree tree(4);
  bool threw = false;
  try {
    tree.set(4, 1.0);
  } catch (const std::out_of_range&) {
    threw = true;
  }
  Check(threw, "index past the end throws out_of_range");
  for (double bad : {-1.0, std::nan(""), HUGE_VAL}) {
    threw = false;
    try {
      tree.set(0, bad);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    Check(threw, "negative / NaN / inf priority throws invalid_argument", bad);
  }
  threw = false;
  try {
    tree.find(0.0);
  } catch (const std::logic_error&) {
    threw = true;
  }
  Check(threw, "find on an all-zero tree throws");
  threw = false;
  try {
    tfdqn::SumTree empty(0);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  Check(threw, "size 0 throws");
}

}  // namespace

void TestFindManyMatchesFind() {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int64_t size : {1, 2, 3, 13, 1000, 4097}) {
    tfdqn::SumTree tree(size);
    for (int64_t i = 0; i < size; ++i) tree.set(i, unit(rng) < 0.3 ? 0.0 : unit(rng));
    tree.set(size - 1, 0.5);  // at least one positive leaf
    std::vector<double> u;
    for (int k = 0; k < 200; ++k) u.push_back(unit(rng) * tree.total());
    u.push_back(0.0);
    u.push_back(tree.total());  // the top end, and past it
    u.push_back(tree.total() * 1.5);
    std::vector<int64_t> many(u.size());
    tree.find_many(u.data(), static_cast<int64_t>(u.size()), many.data());
    for (size_t k = 0; k < u.size(); ++k) {
      Check(many[k] == tree.find(u[k]), "find_many == find", static_cast<double>(size));
    }
  }
}

int main() {
  TestFindMatchesALinearScan();
  TestFindManyMatchesFind();
  TestDrawFrequenciesFollowPriorities();
  TestNoDriftAfterManyUpdates();
  TestBadInputThrows();
  if (failures) {
    std::printf("%d check(s) FAILED\n", failures);
    return 1;
  }
  std::printf("sum tree: all checks PASSED\n");
  return 0;
}
