package clienttests

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func adminClient(t *testing.T) (*kadm.Client, func()) {
	cl := newClient(t)
	return kadm.NewClient(cl), cl.Close
}

func topicConfigs(t *testing.T, adm *kadm.Client, topic string) map[string]kadm.Config {
	t.Helper()
	ctx, cancel := opCtx()
	defer cancel()
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatalf("describe configs: %v", err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("describe configs of %s: %v %v", topic, err, rc.Err)
	}
	out := map[string]kadm.Config{}
	for _, c := range rc.Configs {
		out[c.Key] = c
	}
	return out
}

func TestAdminCreateDescribeAlterDelete(t *testing.T) {
	adm, done := adminClient(t)
	defer done()
	ctx, cancel := opCtx()
	defer cancel()
	topic := unique("go-admin-topic")
	createTopic(t, topic, 3, map[string]*string{"retention.ms": kadm.StringPtr("3600000")})

	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatalf("list topics: %v", err)
	}
	d, ok := details[topic]
	if !ok || d.Err != nil {
		t.Fatalf("describe %s: present=%v err=%v", topic, ok, d.Err)
	}
	if len(d.Partitions) != 3 {
		t.Fatalf("partitions: %d, want 3", len(d.Partitions))
	}
	for _, p := range d.Partitions {
		if p.Leader < 0 || len(p.Replicas) != 1 || p.Err != nil {
			t.Fatalf("partition %d: leader %d replicas %v err %v", p.Partition, p.Leader, p.Replicas, p.Err)
		}
	}

	cfg := topicConfigs(t, adm, topic)
	if c := cfg["retention.ms"]; c.Value == nil || *c.Value != "3600000" || c.Source != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("retention.ms: %+v", c)
	}

	// Incremental: SET one key, DELETE (revert to default) another.
	resps, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "segment.bytes", Value: kadm.StringPtr("1048576")},
		{Op: kadm.DeleteConfig, Name: "retention.ms"},
	}, topic)
	if err != nil {
		t.Fatalf("alter configs: %v", err)
	}
	for _, r := range resps {
		if r.Err != nil {
			t.Fatalf("alter configs of %s: %v %s", r.Name, r.Err, r.ErrMessage)
		}
	}
	cfg = topicConfigs(t, adm, topic)
	if c := cfg["segment.bytes"]; c.Value == nil || *c.Value != "1048576" || c.Source != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("segment.bytes after SET: %+v", c)
	}
	// Back to the broker's default: what a topic created without overrides shows.
	control := topic + "-defaults"
	createTopic(t, control, 1, nil)
	def := topicConfigs(t, adm, control)["retention.ms"]
	if c := cfg["retention.ms"]; c.Value == nil || def.Value == nil || *c.Value != *def.Value ||
		c.Source == kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("retention.ms after DELETE: %+v, want the default %+v and not a topic override", c, def)
	}
	if _, err := adm.DeleteTopics(ctx, control); err != nil {
		t.Fatalf("delete %s: %v", control, err)
	}

	// An unknown key is refused.
	resps, err = adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "no.such.config", Value: kadm.StringPtr("1")}}, topic)
	if err != nil {
		t.Fatalf("alter configs: %v", err)
	}
	if len(resps) != 1 || resps[0].Err != kerr.InvalidConfig {
		t.Fatalf("setting an unknown key: %+v, want INVALID_CONFIG", resps)
	}

	dresps, err := adm.DeleteTopics(ctx, topic)
	if err != nil {
		t.Fatalf("delete topics: %v", err)
	}
	if r, _ := dresps.On(topic, nil); r.Err != nil {
		t.Fatalf("delete %s: %v", topic, r.Err)
	}
	waitUntil(t, opTimeout, func() string { return topic + " to disappear from metadata" }, func() bool {
		details, err := adm.ListTopics(ctx, topic)
		if err != nil {
			return false
		}
		d, ok := details[topic]
		return !ok || d.Err == kerr.UnknownTopicOrPartition
	})
	silt.assertAlive(t)
}

func TestAdminDeleteRecords(t *testing.T) {
	adm, done := adminClient(t)
	defer done()
	ctx, cancel := opCtx()
	defer cancel()
	topic := unique("go-admin-delete-records")
	createTopic(t, topic, 1, nil)
	cl := producer(t, kgo.NoCompression())
	produceIDs(t, cl, topic, 1, 0, 20)
	cl.Close()

	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: 7})
	resps, err := adm.DeleteRecords(ctx, offs)
	if err != nil {
		t.Fatalf("delete records: %v", err)
	}
	r, ok := resps.Lookup(topic, 0)
	if !ok || r.Err != nil || r.LowWatermark != 7 {
		t.Fatalf("delete records: %+v (present %v), want low watermark 7", r, ok)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("list start offsets: %v", err)
	}
	if s, _ := starts.Lookup(topic, 0); s.Err != nil || s.Offset != 7 {
		t.Fatalf("start offset: %+v, want 7", s)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("list end offsets: %v", err)
	}
	if e, _ := ends.Lookup(topic, 0); e.Err != nil || e.Offset != 20 {
		t.Fatalf("end offset: %+v, want 20", e)
	}
	recs := readAll(t, topic, map[int32]int64{0: 20})
	if len(recs) != 13 {
		t.Fatalf("after deleting below 7 read %d records, want 13", len(recs))
	}
	if recs[0].Offset != 7 || string(recs[0].Value) != "v-7" {
		t.Fatalf("a read from the start begins at %d (%q), want 7 (\"v-7\")", recs[0].Offset, recs[0].Value)
	}
}
