package clienttests

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	groupPartitions = 6
	recordsPerRound = 300
	roundTimeout    = 90 * time.Second
)

// member is one group consumer polling, recording and committing on its own
// goroutine. Rebalances are blocked while a polled batch is being processed
// and committed (BlockRebalanceOnPoll), so a revocation never strands a
// processed, uncommitted record.
type member struct {
	name   string
	cl     *kgo.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu           sync.Mutex
	seen         [][2]int64 // (partition, offset) of every processed record
	assignment   map[int32]bool
	commitErrors []string
	pollErrors   []string
}

func startMember(t *testing.T, name, protocol, group, topic string) *member {
	t.Helper()
	m := &member{name: name, assignment: map[int32]bool{}, done: make(chan struct{})}
	opts := []kgo.Opt{
		kgo.ClientID("silt-go-" + name),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range a[topic] {
				m.assignment[p] = true
			}
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, r map[string][]int32) {
			// Everything polled was committed before the rebalance was allowed;
			// this commits anything still marked, to be safe.
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				m.mu.Lock()
				m.commitErrors = append(m.commitErrors, "on revoke: "+err.Error())
				m.mu.Unlock()
			}
			m.drop(r[topic])
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, l map[string][]int32) { m.drop(l[topic]) }),
	}
	if protocol == "consumer" {
		// KIP-848: the broker assigns; franz-go needs a range or sticky balancer for it.
		opts = append(opts, kgo.ServerSideBalancer(), kgo.Balancers(kgo.StickyBalancer()))
	} else {
		opts = append(opts, kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(500*time.Millisecond),
			kgo.RebalanceTimeout(20*time.Second))
	}
	m.cl = newClient(t, opts...)
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.run(ctx)
	return m
}

func (m *member) drop(ps []int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range ps {
		delete(m.assignment, p)
	}
}

func (m *member) run(ctx context.Context) {
	defer close(m.done)
	for ctx.Err() == nil {
		fs := m.cl.PollRecords(ctx, 50)
		fs.EachError(func(topic string, p int32, err error) {
			if ctx.Err() == nil {
				m.mu.Lock()
				m.pollErrors = append(m.pollErrors, fmt.Sprintf("%s/%d: %v", topic, p, err))
				m.mu.Unlock()
			}
		})
		recs := fs.Records()
		m.mu.Lock()
		for _, r := range recs {
			m.seen = append(m.seen, [2]int64{int64(r.Partition), r.Offset})
		}
		m.mu.Unlock()
		if len(recs) > 0 {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := m.cl.CommitRecords(cctx, recs...); err != nil {
				m.mu.Lock()
				m.commitErrors = append(m.commitErrors, err.Error())
				m.mu.Unlock()
			}
			cancel()
		}
		m.cl.AllowRebalance()
	}
}

// leave stops polling and closes the client, which leaves the group.
func (m *member) leave(t *testing.T) {
	t.Helper()
	m.cancel()
	select {
	case <-m.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("member %s did not stop polling within 60s", m.name)
	}
	m.cl.AllowRebalance()
	m.cl.Close()
}

func (m *member) snapshot() (map[int32]bool, [][2]int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := map[int32]bool{}
	for p := range m.assignment {
		a[p] = true
	}
	return a, append([][2]int64(nil), m.seen...)
}

func (m *member) describe() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ps []int
	for p := range m.assignment {
		ps = append(ps, int(p))
	}
	sort.Ints(ps)
	return fmt.Sprintf("%s: assignment=%v seen=%d commitErrors=%v pollErrors=%v", m.name, ps, len(m.seen),
		m.commitErrors, m.pollErrors)
}

func describeAll(ms []*member) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.describe())
	}
	return strings.Join(out, "\n")
}

func awaitBalanced(t *testing.T, ms []*member) {
	t.Helper()
	waitUntil(t, roundTimeout, func() string {
		return fmt.Sprintf("%d members to hold a balanced, disjoint assignment of all %d partitions:\n%s\n%s",
			len(ms), groupPartitions, describeAll(ms), silt.logTail(30))
	}, func() bool {
		union := map[int32]bool{}
		total, lo, hi := 0, groupPartitions, 0
		for _, m := range ms {
			a, _ := m.snapshot()
			for p := range a {
				union[p] = true
			}
			total += len(a)
			lo, hi = min(lo, len(a)), max(hi, len(a))
		}
		return total == groupPartitions && len(union) == groupPartitions && lo >= 1 && hi-lo <= 1
	})
}

func awaitConsumed(t *testing.T, ms []*member, acked map[[2]int64]bool) {
	t.Helper()
	waitUntil(t, roundTimeout, func() string {
		return fmt.Sprintf("%d records to be consumed:\n%s", len(acked), describeAll(ms))
	}, func() bool {
		seen := map[[2]int64]bool{}
		for _, m := range ms {
			_, s := m.snapshot()
			for _, r := range s {
				seen[r] = true
			}
		}
		for r := range acked {
			if !seen[r] {
				return false
			}
		}
		return true
	})
}

func produceRound(t *testing.T, topic string, from int, acked map[[2]int64]bool) {
	cl := producer(t, kgo.ZstdCompression())
	defer cl.Close()
	for _, r := range produceIDs(t, cl, topic, groupPartitions, from, recordsPerRound) {
		acked[[2]int64{int64(r.Partition), r.Offset}] = true
	}
}

// Three members commit after every batch; one leaves; the other two take
// over its partitions from the committed offsets. Every record is consumed
// exactly once and the committed offsets end at the log end.
func TestGroupOfThreeMemberLeaves(t *testing.T) {
	for _, protocol := range []string{"classic", "consumer"} {
		t.Run(protocol, func(t *testing.T) {
			topic, group := unique("go-group-"+protocol), unique("go-group-"+protocol)
			createTopic(t, topic, groupPartitions, nil)
			ms := []*member{
				startMember(t, "a", protocol, group, topic),
				startMember(t, "b", protocol, group, topic),
				startMember(t, "c", protocol, group, topic),
			}
			left := map[*member]bool{}
			defer func() {
				for _, m := range ms {
					if !left[m] {
						m.leave(t)
					}
				}
			}()
			awaitBalanced(t, ms)

			adm, done := adminClient(t)
			defer done()
			ctx, cancel := opCtx()
			defer cancel()
			listed, err := adm.ListGroups(ctx)
			if err != nil {
				t.Fatalf("list groups: %v", err)
			}
			if g := listed[group]; g.GroupType != protocol {
				t.Fatalf("group %s has type %q, want %q (the client used the wrong protocol)", group, g.GroupType, protocol)
			}

			acked := map[[2]int64]bool{}
			produceRound(t, topic, 0, acked)
			awaitConsumed(t, ms, acked)

			leaving, _ := ms[2].snapshot()
			ms[2].leave(t)
			left[ms[2]] = true
			awaitBalanced(t, ms[:2])
			moved := false
			for _, m := range ms[:2] {
				a, _ := m.snapshot()
				for p := range leaving {
					moved = moved || a[p]
				}
			}
			if !moved {
				t.Fatalf("c's partitions %v were not reassigned:\n%s", leaving, describeAll(ms))
			}

			produceRound(t, topic, recordsPerRound, acked)
			awaitConsumed(t, ms, acked)

			counts := map[[2]int64]int{}
			for _, m := range ms {
				_, s := m.snapshot()
				for _, r := range s {
					counts[r]++
				}
			}
			for r, n := range counts {
				if n != 1 || !acked[r] {
					t.Fatalf("record %v consumed %d times (produced: %v)\n%s", r, n, acked[r], describeAll(ms))
				}
			}
			if len(counts) != len(acked) {
				t.Fatalf("consumed %d distinct records, produced %d", len(counts), len(acked))
			}

			want := int64(2 * recordsPerRound / groupPartitions)
			waitUntil(t, roundTimeout, func() string { return fmt.Sprintf("committed offsets of %s at %d", group, want) },
				func() bool {
					offs, err := adm.FetchOffsets(ctx, group)
					if err != nil {
						return false
					}
					for p := int32(0); p < groupPartitions; p++ {
						o, ok := offs.Lookup(topic, p)
						if !ok || o.Err != nil || o.At != want {
							return false
						}
					}
					return true
				})
			silt.assertAlive(t)
		})
	}
}
