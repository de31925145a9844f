package clienttests

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// consumeByRegex subscribes a group member to "prefix-.*" and returns every
// record of the matching topics (prefix-a before subscribing, prefix-b
// after), or the first error the client reports. other-prefix must not match.
func consumeByRegex(t *testing.T, prefix string, opts ...kgo.Opt) (map[string]bool, error) {
	t.Helper()
	const records = 10
	createTopic(t, prefix+"-a", 1, nil)
	createTopic(t, "other-"+prefix, 1, nil)
	p := producer(t, kgo.NoCompression())
	defer p.Close()
	produceIDs(t, p, prefix+"-a", 1, 0, records)
	produceIDs(t, p, "other-"+prefix, 1, 0, records)
	cl := newClient(t, append([]kgo.Opt{kgo.ConsumerGroup(prefix), kgo.ConsumeRegex(), kgo.ConsumeTopics(prefix + "-.*"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.MetadataMinAge(100 * time.Millisecond),
		kgo.MetadataMaxAge(500 * time.Millisecond)}, opts...)...)
	defer cl.Close()
	seen := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	consume := func(n int) error {
		for len(seen) < n {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				return fmt.Errorf("have %d of %d records: %w", len(seen), n, ctx.Err())
			}
			var err error
			fs.EachError(func(topic string, p int32, e error) { err = errors.Join(err, e) })
			if err != nil {
				return err
			}
			fs.EachRecord(func(r *kgo.Record) { seen[fmt.Sprintf("%s/%d", r.Topic, r.Offset)] = true })
		}
		return nil
	}
	if err := consume(records); err != nil {
		return seen, err
	}
	createTopic(t, prefix+"-b", 1, nil)
	produceIDs(t, p, prefix+"-b", 1, 0, records)
	return seen, consume(2 * records)
}

func wantRegexRecords(t *testing.T, prefix string, seen map[string]bool) {
	t.Helper()
	for _, topic := range []string{prefix + "-a", prefix + "-b"} {
		for i := 0; i < 10; i++ {
			if !seen[fmt.Sprintf("%s/%d", topic, i)] {
				t.Fatalf("record %s/%d not consumed; have %v", topic, i, seen)
			}
		}
	}
	if len(seen) != 20 {
		t.Fatalf("consumed %d records, want 20 (nothing from other-%s): %v", len(seen), prefix, seen)
	}
}

// With the classic protocol franz-go matches the regex itself.
func TestRegexSubscriptionClassic(t *testing.T) {
	prefix := unique("go-regex-classic")
	seen, err := consumeByRegex(t, prefix)
	if err != nil {
		t.Fatal(err)
	}
	wantRegexRecords(t, prefix, seen)
}

// With KIP-848 franz-go sends the regex to the broker (ConsumerGroupHeartbeat's
// SubscribedTopicRegex), which matches it and re-matches it as topics come and go.
func TestRegexSubscriptionServerSide(t *testing.T) {
	prefix := unique("go-regex-server")
	seen, err := consumeByRegex(t, prefix, kgo.ServerSideBalancer(), kgo.Balancers(kgo.StickyBalancer()))
	if err != nil {
		t.Fatal(err)
	}
	wantRegexRecords(t, prefix, seen)
}
