// MPI tests of the counting layer (src/parallel/comm.hpp) and of the topology
// (src/parallel/topology.hpp). Registered at np 2, 4 and 5; every rank runs every test.
// Expected byte counts are computed here from the formulas in comm.hpp, independently of
// the implementation (floating point + llround, not the integer rounding of comm.cpp).
#include <gtest/gtest.h>
#include <mpi.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "parallel/comm.hpp"      // defines: Comm, CommStats, Tier, tier_name
#include "parallel/topology.hpp"  // defines: Topology, Communicators
#include "util/errors.hpp"        // defines: UserError
#include "wire/mpi_tags.hpp"      // defines: TAG_TEST_RING, TAG_TEST_PROBE

using namespace px;

namespace {

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int s = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

// Ring all-reduce convention: 2*(p-1)/p * bytes, rounded to nearest; 0 for p == 1.
int64_t ring_expected(int64_t bytes, int p) {
  return p <= 1 ? 0 : static_cast<int64_t>(std::llround(2.0 * (p - 1) / p * static_cast<double>(bytes)));
}

// Every tier except `t` is zero, `t` holds `want`.
void expect_only(const CommStats& s, Tier t, int64_t want) {
  for (int i = 0; i < kTierCount; ++i) {
    const Tier u = static_cast<Tier>(i);
    EXPECT_EQ(s.bytes(u), u == t ? want : 0) << "tier " << tier_name(u) << " on rank " << world_rank();
  }
}

}  // namespace

// ---- tiers and formulas ------------------------------------------------------------------

TEST(CommTier, NamesFollowDesign) {
  const char* want[] = {"island", "backbone", "sketch", "adapter", "snapshot", "surrogate", "expert_parallel", "control"};
  ASSERT_EQ(kTierCount, 8);
  for (int i = 0; i < kTierCount; ++i) EXPECT_STREQ(tier_name(static_cast<Tier>(i)), want[i]);
}

TEST(CommTier, RingBytesFormula) {
  for (int p = 1; p <= 9; ++p)
    for (int64_t b : {0LL, 1LL, 3LL, 4LL, 7LL, 148LL, 1001LL, 4096LL, 123456789LL, 40000000000LL})
      EXPECT_EQ(ring_allreduce_bytes(b, p), ring_expected(b, p)) << "p " << p << " bytes " << b;
}

// ---- all-reduce ----------------------------------------------------------------------------

template <class T>
void check_allreduce_sum(Tier tier) {
  const int r = world_rank(), p = world_size();
  CommStats stats;
  Comm world(MPI_COMM_WORLD, stats);
  const int n = 37;  // odd: 37*4 bytes exercises the rounding at p = 5
  std::vector<T> v(n);
  for (int i = 0; i < n; ++i) v[i] = static_cast<T>(r * 1000 + i);
  world.allreduce_sum(v.data(), n, tier);
  for (int i = 0; i < n; ++i) EXPECT_EQ(v[i], static_cast<T>(1000 * p * (p - 1) / 2 + p * i)) << "i " << i;
  expect_only(stats, tier, ring_expected(n * int64_t(sizeof(T)), p));
}

TEST(CommAllreduce, SumFloat) { check_allreduce_sum<float>(Tier::ISLAND); }
TEST(CommAllreduce, SumDouble) { check_allreduce_sum<double>(Tier::BACKBONE); }
TEST(CommAllreduce, SumInt64) { check_allreduce_sum<int64_t>(Tier::CONTROL); }

template <class T>
void check_allreduce_max(Tier tier) {
  const int r = world_rank(), p = world_size();
  CommStats stats;
  Comm world(MPI_COMM_WORLD, stats);
  const int n = 11;
  std::vector<T> v(n);
  // element i is largest on rank i % p
  for (int i = 0; i < n; ++i) v[i] = static_cast<T>(r == i % p ? 100 + i : -r - i);
  world.allreduce_max(v.data(), n, tier);
  for (int i = 0; i < n; ++i) EXPECT_EQ(v[i], static_cast<T>(100 + i));
  expect_only(stats, tier, ring_expected(n * int64_t(sizeof(T)), p));
}

TEST(CommAllreduce, MaxFloat) { check_allreduce_max<float>(Tier::SKETCH); }
TEST(CommAllreduce, MaxDouble) { check_allreduce_max<double>(Tier::ADAPTER); }
TEST(CommAllreduce, MaxInt64) { check_allreduce_max<int64_t>(Tier::CONTROL); }

// Identical inputs give bit-identical sums on every rank and on every repetition, with
// values whose float sum depends on the order of additions.
TEST(CommAllreduce, DeterministicBits) {
  const int r = world_rank();
  CommStats stats;
  Comm world(MPI_COMM_WORLD, stats);
  const int n = 4099;
  std::vector<float> in(n);
  std::mt19937 rng(1234 + r);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& x : in) x = u(rng) * std::pow(10.f, static_cast<float>(rng() % 8) - 4.f);
  std::vector<float> a = in, b = in;
  world.allreduce_sum(a.data(), n, Tier::ISLAND);
  world.allreduce_sum(b.data(), n, Tier::ISLAND);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), n * sizeof(float)), 0) << "repeat differs on rank " << r;
  std::vector<float> root = a;
  MPI_Bcast(root.data(), n, MPI_FLOAT, 0, MPI_COMM_WORLD);
  EXPECT_EQ(std::memcmp(a.data(), root.data(), n * sizeof(float)), 0) << "rank " << r << " differs from rank 0";
}

// p == 1: nothing leaves the rank, nothing is counted.
TEST(CommAllreduce, SingletonCountsZero) {
  const int r = world_rank();
  CommStats stats;
  Comm self = Comm::split(MPI_COMM_WORLD, r, 0, stats);
  ASSERT_EQ(self.size(), 1);
  std::vector<double> v = {1.5, 2.5 + r};
  self.allreduce_sum(v.data(), 2, Tier::ISLAND);
  EXPECT_EQ(v[0], 1.5);
  EXPECT_EQ(v[1], 2.5 + r);
  int one = 1;
  self.bcast(&one, sizeof one, 0, Tier::CONTROL);
  EXPECT_EQ(stats.total(), 0);
}

// An all-reduce done outside MPI (NCCL on the GPUs) is counted as the MPI one of the same bytes.
TEST(CommAllreduce, ExternalAllreduceCountsAsTheMpiOne) {
  const int p = world_size();
  CommStats mpi_stats, external_stats;
  Comm mpi(MPI_COMM_WORLD, mpi_stats), external(MPI_COMM_WORLD, external_stats);
  std::vector<float> v(37, 1.f);
  mpi.allreduce_sum(v.data(), (int64_t)v.size(), Tier::ISLAND);
  external.count_allreduce((int64_t)(v.size() * sizeof(float)), Tier::ISLAND);
  EXPECT_EQ(external_stats.snapshot(), mpi_stats.snapshot());
  expect_only(external_stats, Tier::ISLAND, ring_expected(37 * 4, p));
}

// ---- gathers, all-to-all, broadcast ------------------------------------------------------------

TEST(CommCollective, Allgatherv) {
  const int r = world_rank(), p = world_size();
  CommStats stats;
  Comm world(MPI_COMM_WORLD, stats);
  auto len = [](int rank) { return 3 * (rank + 1); };
  auto val = [](int rank, int j) { return static_cast<unsigned char>((rank * 16 + j) & 0xff); };
  std::vector<unsigned char> send(len(r));
  for (int j = 0; j < len(r); ++j) send[j] = val(r, j);
  std::vector<int> recv_bytes(p);
  int total = 0;
  for (int s = 0; s < p; ++s) total += recv_bytes[s] = len(s);
  std::vector<unsigned char> recv(total, 0);
  world.allgatherv(send.data(), len(r), recv.data(), recv_bytes, Tier::SNAPSHOT);
  int off = 0;
  for (int s = 0; s < p; ++s)
    for (int j = 0; j < len(s); ++j, ++off) EXPECT_EQ(recv[off], val(s, j)) << "from " << s << " byte " << j;
  expect_only(stats, Tier::SNAPSHOT, int64_t(len(r)) * (p - 1));
}

TEST(CommCollective, Alltoallv) {
  const int r = world_rank(), p = world_size();
  CommStats stats;
  Comm world(MPI_COMM_WORLD, stats);
  auto len = [](int from, int to) { return from + 2 * to + 1; };
  auto val = [](int from, int to, int j) { return static_cast<unsigned char>((from * 31 + to * 7 + j) & 0xff); };
  std::vector<int> sb(p), sd(p), rb(p), rd(p);
  int so = 0, ro = 0;
  for (int d = 0; d < p; ++d) {
    sb[d] = len(r, d), sd[d] = so, so += sb[d];
    rb[d] = len(d, r), rd[d] = ro, ro += rb[d];
  }
  std::vector<unsigned char> send(so), recv(ro, 0);
  for (int d = 0; d < p; ++d)
    for (int j = 0; j < sb[d]; ++j) send[sd[d] + j] = val(r, d, j);
  world.alltoallv(send.data(), sb, sd, recv.data(), rb, rd, Tier::EXPERT_PARALLEL);
  for (int s = 0; s < p; ++s)
    for (int j = 0; j < rb[s]; ++j) EXPECT_EQ(recv[rd[s] + j], val(s, r, j)) << "from " << s << " byte " << j;
  int64_t to_others = 0;
  for (int d = 0; d < p; ++d)
    if (d != r) to_others += len(r, d);
  expect_only(stats, Tier::EXPERT_PARALLEL, to_others);
}

TEST(CommCollective, Bcast) {
  const int r = world_rank(), p = world_size();
  const int root = 1 % p;
  CommStats stats;
  Comm world(MPI_COMM_WORLD, stats);
  std::vector<unsigned char> buf(1001, 0);
  if (r == root)
    for (size_t j = 0; j < buf.size(); ++j) buf[j] = static_cast<unsigned char>(j * 13 + 5);
  world.bcast(buf.data(), static_cast<int64_t>(buf.size()), root, Tier::SURROGATE);
  for (size_t j = 0; j < buf.size(); ++j) EXPECT_EQ(buf[j], static_cast<unsigned char>(j * 13 + 5));
  expect_only(stats, Tier::SURROGATE, r == root ? 1001 * int64_t(p - 1) : 0);
}

// ---- point-to-point --------------------------------------------------------------------------

TEST(CommP2P, IsendIrecvRingCountedAtPost) {
  const int r = world_rank(), p = world_size();
  CommStats stats;
  Comm p2p = Comm::dup(MPI_COMM_WORLD, stats);
  const int to = (r + 1) % p, from = (r + p - 1) % p;
  std::vector<unsigned char> send(100 + r), recv(100 + from);
  for (size_t j = 0; j < send.size(); ++j) send[j] = static_cast<unsigned char>(r + j);
  MPI_Request rr = p2p.irecv(recv.data(), static_cast<int>(recv.size()), from, TAG_TEST_RING);
  MPI_Request sr = p2p.isend(send.data(), static_cast<int>(send.size()), to, TAG_TEST_RING, Tier::SKETCH);
  expect_only(stats, Tier::SKETCH, 100 + r);  // counted when posted, before completion
  std::vector<MPI_Request> reqs = {rr, sr};
  Comm::wait_all(reqs);
  for (size_t j = 0; j < recv.size(); ++j) EXPECT_EQ(recv[j], static_cast<unsigned char>(from + j));
  expect_only(stats, Tier::SKETCH, 100 + r);  // receiving counts nothing
}

TEST(CommP2P, ProbeIprobeRecv) {
  const int r = world_rank(), p = world_size();
  CommStats stats;
  Comm p2p = Comm::dup(MPI_COMM_WORLD, stats);
  const int to = (r + 1) % p, from = (r + p - 1) % p;
  std::vector<unsigned char> send(10 * r + 3, static_cast<unsigned char>(r));
  MPI_Request sr = p2p.isend(send.data(), static_cast<int>(send.size()), to, TAG_TEST_PROBE + r, Tier::ADAPTER);
  // iprobe until the message is here, then probe (it is still pending) and receive it
  std::optional<MPI_Status> st;
  while (!(st = p2p.iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG))) {
  }
  EXPECT_EQ(st->MPI_SOURCE, from);
  EXPECT_EQ(st->MPI_TAG, TAG_TEST_PROBE + from);
  MPI_Status ps = p2p.probe(from, TAG_TEST_PROBE + from);
  const int n = Comm::status_bytes(ps);
  EXPECT_EQ(n, 10 * from + 3);
  std::vector<unsigned char> recv(n);
  MPI_Status rs = p2p.recv(recv.data(), n, ps.MPI_SOURCE, ps.MPI_TAG);
  EXPECT_EQ(Comm::status_bytes(rs), n);
  for (unsigned char c : recv) EXPECT_EQ(c, static_cast<unsigned char>(from));
  Comm::wait(sr);
  p2p.barrier();
  EXPECT_FALSE(p2p.iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG).has_value());
  expect_only(stats, Tier::ADAPTER, 10 * r + 3);
}

// ---- stats ---------------------------------------------------------------------------------

TEST(CommStatsTest, TiersAccumulateSeparately) {
  const int r = world_rank(), p = world_size();
  CommStats stats;
  Comm world(MPI_COMM_WORLD, stats);
  std::vector<float> f(8, 1.f);
  world.allreduce_sum(f.data(), 8, Tier::ISLAND);
  world.allreduce_sum(f.data(), 8, Tier::ISLAND);
  world.bcast(f.data(), 32, 0, Tier::SNAPSHOT);
  world.barrier();
  std::array<int64_t, kTierCount> want{};
  want[int(Tier::ISLAND)] = 2 * ring_expected(32, p);
  want[int(Tier::SNAPSHOT)] = r == 0 ? 32 * int64_t(p - 1) : 0;
  EXPECT_EQ(stats.snapshot(), want);
  EXPECT_EQ(stats.total(), want[int(Tier::ISLAND)] + want[int(Tier::SNAPSHOT)]);
  stats.reset();
  EXPECT_EQ(stats.total(), 0);
}

TEST(CommStatsTest, GatherToRootIsTierByRank) {
  const int r = world_rank(), p = world_size();
  CommStats stats;
  for (int t = 0; t < kTierCount; ++t) stats.add(static_cast<Tier>(t), 1000 * r + t + 1);
  const int root = p - 1;
  auto m = stats.gather_to_root(MPI_COMM_WORLD, root);
  if (r == root) {
    ASSERT_EQ(static_cast<int>(m.size()), kTierCount);
    for (int t = 0; t < kTierCount; ++t) {
      ASSERT_EQ(static_cast<int>(m[t].size()), p);
      for (int s = 0; s < p; ++s) EXPECT_EQ(m[t][s], 1000 * s + t + 1) << "tier " << t << " rank " << s;
    }
  } else {
    EXPECT_TRUE(m.empty());
  }
  // the gather itself is control traffic, counted by the ranks that sent
  const int64_t ctl = 1000 * r + int(Tier::CONTROL) + 1 + (r == root ? 0 : kTierCount * 8);
  EXPECT_EQ(stats.bytes(Tier::CONTROL), ctl);
  EXPECT_EQ(stats.bytes(Tier::ISLAND), 1000 * r + 1);
}

TEST(CommStatsTest, DupAndSplitShareStats) {
  const int r = world_rank(), p = world_size();
  CommStats stats;
  Comm dup = Comm::dup(MPI_COMM_WORLD, stats);
  EXPECT_EQ(dup.size(), p);
  EXPECT_EQ(dup.rank(), r);
  int cmp = 0;
  MPI_Comm_compare(dup.get(), MPI_COMM_WORLD, &cmp);
  EXPECT_EQ(cmp, MPI_CONGRUENT);
  // even/odd halves; the last rank of an odd world sits out (MPI_UNDEFINED -> null Comm)
  const bool out = (p % 2 == 1 && r == p - 1);
  Comm half = Comm::split(MPI_COMM_WORLD, out ? MPI_UNDEFINED : r % 2, r, stats);
  EXPECT_EQ(half.null(), out);
  int64_t want = 0;
  if (!out) {
    EXPECT_EQ(half.size(), p / 2);
    int64_t x = r;
    half.allreduce_sum(&x, 1, Tier::CONTROL);
    int64_t sum = 0;
    for (int s = r % 2; s < (p / 2) * 2; s += 2) sum += s;
    EXPECT_EQ(x, sum);
    want += ring_expected(8, half.size());
    EXPECT_THROW(Comm(MPI_COMM_NULL, stats).barrier(), std::logic_error);
  }
  int64_t y = 1;
  dup.allreduce_max(&y, 1, Tier::CONTROL);
  want += ring_expected(8, p);
  expect_only(stats, Tier::CONTROL, want);
  Comm moved = std::move(half);  // ownership moves, the communicator is freed once
  EXPECT_TRUE(half.null());
  EXPECT_EQ(moved.null(), out);
}

// ---- topology --------------------------------------------------------------------------------

TEST(Topology, RolesByRank) {
  // I=2, R=2, S=1, W=2: ranks 0-1 island 0, 2-3 island 1, 4 syncer, 5-6 workers
  const RoleKind want_role[] = {RoleKind::LEARNER, RoleKind::LEARNER, RoleKind::LEARNER, RoleKind::LEARNER, RoleKind::SYNCER,
                            RoleKind::EXPERT_WORKER, RoleKind::EXPERT_WORKER};
  const int want_island[] = {0, 0, 1, 1, -1, -1, -1}, want_local[] = {0, 1, 0, 1, -1, -1, -1};
  const int want_syncer[] = {-1, -1, -1, -1, 0, -1, -1}, want_worker[] = {-1, -1, -1, -1, -1, 0, 1};
  for (int rank = 0; rank < 7; ++rank) {
    const Topology t = Topology::make(2, 2, 1, 2, rank, 7);
    EXPECT_EQ(t.role, want_role[rank]) << rank;
    EXPECT_EQ(t.island, want_island[rank]) << rank;
    EXPECT_EQ(t.local_rank, want_local[rank]) << rank;
    EXPECT_EQ(t.syncer_index, want_syncer[rank]) << rank;
    EXPECT_EQ(t.worker_index, want_worker[rank]) << rank;
  }
  const Topology t = Topology::make(2, 2, 1, 2, 0, 7);
  EXPECT_EQ(t.learners(), 4);
  EXPECT_EQ(t.learner_rank(1, 1), 3);
  EXPECT_EQ(t.syncer_rank(0), 4);
  EXPECT_EQ(t.worker_rank(1), 6);
  EXPECT_STREQ(role_name(RoleKind::EXPERT_WORKER), "expert_worker");
}

TEST(Topology, MismatchIsUserErrorNamingTheNumbers) {
  try {
    Topology::make(2, 2, 0, 0, 0, 5);
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_STREQ(e.what(), "world size 5 does not match [topology]: islands 2 x ranks_per_island 2 + "
                           "syncers 0 + expert_workers 0 = 4");
  }
  // the real world size against a topology one rank too big: an exception, no MPI abort
  const int p = world_size();
  EXPECT_THROW(Topology::make(1, p, 1, 0, world_rank(), p), UserError);
  EXPECT_THROW(Topology::make(0, 2, 0, 0, 0, 0), UserError);
  EXPECT_THROW(Topology::make(1, 2, -1, 0, 0, 1), UserError);
  EXPECT_THROW(Topology::make(1, 2, 0, 0, 2, 2), UserError);
}

namespace {

// World ranks of the members of `c`, in c's rank order.
std::vector<int> members(MPI_Comm c) {
  int n = 0, me = world_rank();
  MPI_Comm_size(c, &n);
  std::vector<int> out(n);
  MPI_Allgather(&me, 1, MPI_INT, out.data(), 1, MPI_INT, c);
  return out;
}

void check_communicators(int I, int R, int S, int W) {
  const int r = world_rank(), p = world_size();
  const Topology t = Topology::make(I, R, S, W, r, p);
  Communicators c = Communicators::split(t);
  EXPECT_EQ(c.world, MPI_COMM_WORLD);
  int cmp = 0;
  MPI_Comm_compare(c.p2p, MPI_COMM_WORLD, &cmp);
  EXPECT_EQ(cmp, MPI_CONGRUENT);
  if (t.is_learner()) {
    ASSERT_NE(c.learners, MPI_COMM_NULL);
    ASSERT_NE(c.island, MPI_COMM_NULL);
    ASSERT_NE(c.peers, MPI_COMM_NULL);
    std::vector<int> all(I * R), isl(R), peers(I);
    for (int k = 0; k < I * R; ++k) all[k] = k;
    for (int k = 0; k < R; ++k) isl[k] = t.learner_rank(t.island, k);
    for (int i = 0; i < I; ++i) peers[i] = t.learner_rank(i, t.local_rank);
    EXPECT_EQ(members(c.learners), all);
    EXPECT_EQ(members(c.island), isl);
    EXPECT_EQ(members(c.peers), peers);
  } else {
    EXPECT_EQ(c.learners, MPI_COMM_NULL);
    EXPECT_EQ(c.island, MPI_COMM_NULL);
    EXPECT_EQ(c.peers, MPI_COMM_NULL);
  }
  // counted traffic over the split communicators
  CommStats stats;
  if (t.is_learner()) {
    Comm island(c.island, stats);
    double g = 1.0;
    island.allreduce_sum(&g, 1, Tier::ISLAND);
    EXPECT_EQ(g, R);
    expect_only(stats, Tier::ISLAND, ring_expected(8, R));
  }
}

}  // namespace

TEST(Communicators, Np2TwoIslandsOfOne) {
  if (world_size() != 2) GTEST_SKIP() << "needs np 2";
  check_communicators(2, 1, 0, 0);
  check_communicators(1, 2, 0, 0);
}

TEST(Communicators, Np4TwoIslandsOfTwo) {
  if (world_size() != 4) GTEST_SKIP() << "needs np 4";
  check_communicators(2, 2, 0, 0);
  check_communicators(1, 2, 1, 1);
}

TEST(Communicators, Np5TwoIslandsOfTwoAndASyncer) {
  if (world_size() != 5) GTEST_SKIP() << "needs np 5";
  check_communicators(2, 2, 1, 0);
  const Topology t = Topology::make(2, 2, 1, 0, world_rank(), 5);
  EXPECT_EQ(t.role, world_rank() == 4 ? RoleKind::SYNCER : RoleKind::LEARNER);
}
