package clienttests

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const producePartitions = 3
const produceRecords = 600

func newClient(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	// Client warnings and errors go to stderr: go test -v shows them beside the test.
	base := []kgo.Opt{kgo.SeedBrokers(silt.bootstrap), kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil))}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	return cl
}

func createTopic(t *testing.T, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	cl := newClient(t)
	defer cl.Close()
	ctx, cancel := opCtx()
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, configs, topic)
	if err != nil || resp.Err != nil {
		t.Fatalf("create topic %s: %v %v", topic, err, resp.Err)
	}
}

// produceIDs sends one record per id to partition id % partitions (key
// "key-i", value "v-i") with an idempotent, acks=all producer and returns
// the offset each landed at. Every send must succeed.
func produceIDs(t *testing.T, cl *kgo.Client, topic string, partitions, from, count int) map[int]*kgo.Record {
	t.Helper()
	var mu sync.Mutex
	var errs []error
	out := make(map[int]*kgo.Record, count)
	ctx, cancel := opCtx()
	defer cancel()
	for i := from; i < from+count; i++ {
		id := i
		r := &kgo.Record{Topic: topic, Partition: int32(id % partitions),
			Key: []byte(fmt.Sprintf("key-%d", id)), Value: []byte(fmt.Sprintf("v-%d", id))}
		cl.Produce(ctx, r, func(r *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("id %d: %w", id, err))
				return
			}
			out[id] = r
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("%d sends failed, e.g. %v", len(errs), errs[0])
	}
	return out
}

func producer(t *testing.T, codec kgo.CompressionCodec) *kgo.Client {
	// Idempotence is franz-go's default; acks=all is what it requires.
	return newClient(t, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerBatchCompression(codec),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5e6))
}

// readAll consumes every partition of topic from the start up to end offsets.
func readAll(t *testing.T, topic string, end map[int32]int64) []*kgo.Record {
	t.Helper()
	offsets := map[int32]kgo.Offset{}
	for p := range end {
		offsets[p] = kgo.NewOffset().AtStart()
	}
	cl := newClient(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}))
	defer cl.Close()
	var out []*kgo.Record
	next := map[int32]int64{}
	done := func() bool {
		for p, e := range end {
			if next[p] < e {
				return false
			}
		}
		return true
	}
	ctx, cancel := opCtx()
	defer cancel()
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s up to %v: have %d records, next offsets %v", topic, end, len(out), next)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, r)
			next[r.Partition] = r.Offset + 1
		})
	}
	return out
}

func TestIdempotentProduceAndConsume(t *testing.T) {
	codecs := map[string]kgo.CompressionCodec{
		"gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
		"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
	}
	for _, name := range []string{"gzip", "snappy", "lz4", "zstd"} {
		t.Run(name, func(t *testing.T) {
			topic := unique("go-produce-" + name)
			createTopic(t, topic, producePartitions, nil)
			cl := producer(t, codecs[name])
			// Two flushes: the second continues the producer's sequence numbers.
			acked := produceIDs(t, cl, topic, producePartitions, 0, produceRecords/2)
			for id, r := range produceIDs(t, cl, topic, producePartitions, produceRecords/2, produceRecords/2) {
				acked[id] = r
			}
			cl.Close()
			for id, r := range acked {
				if r.Partition != int32(id%producePartitions) || r.Offset != int64(id/producePartitions) {
					t.Fatalf("id %d landed at %d/%d, want %d/%d", id, r.Partition, r.Offset,
						id%producePartitions, id/producePartitions)
				}
				if r.ProducerID < 0 {
					t.Fatalf("id %d was produced without a producer id (not idempotent)", id)
				}
			}
			end := map[int32]int64{}
			for p := int32(0); p < producePartitions; p++ {
				end[p] = produceRecords / producePartitions
			}
			recs := readAll(t, topic, end)
			if len(recs) != produceRecords {
				t.Fatalf("read back %d records, want %d", len(recs), produceRecords)
			}
			next := map[int32]int64{}
			for _, r := range recs {
				if r.Offset != next[r.Partition] {
					t.Fatalf("partition %d: offset %d, want %d (dense, in order)", r.Partition, r.Offset, next[r.Partition])
				}
				next[r.Partition]++
				id := int(r.Offset)*producePartitions + int(r.Partition)
				if string(r.Key) != fmt.Sprintf("key-%d", id) || string(r.Value) != fmt.Sprintf("v-%d", id) {
					t.Fatalf("record %d/%d: key %q value %q, want id %d", r.Partition, r.Offset, r.Key, r.Value, id)
				}
			}
			silt.assertAlive(t)
		})
	}
}
