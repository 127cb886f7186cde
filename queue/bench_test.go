package queue_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/testsupport"
)

func benchClient(b *testing.B) *queue.Client {
	b.Helper()
	c := queue.NewClient(testsupport.NewDB(b))
	if err := c.Create(context.Background(), "bench"); err != nil {
		b.Fatal(err)
	}
	return c
}

func stepMessageBody(b *testing.B) []byte {
	b.Helper()
	body, err := queue.StepMessage{TaskUUID: uuid.New(), StepUUID: uuid.New(), CorrelationID: uuid.New()}.Encode()
	if err != nil {
		b.Fatal(err)
	}
	return body
}

func reportRate(b *testing.B, msgs int) {
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkSend(b *testing.B) {
	ctx := context.Background()
	c, body := benchClient(b), stepMessageBody(b)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := c.Send(ctx, "bench", body, 0); err != nil {
			b.Fatal(err)
		}
		n++
	}
	reportRate(b, n)
}

func BenchmarkSendSubSecondDelay(b *testing.B) {
	ctx := context.Background()
	c, body := benchClient(b), stepMessageBody(b)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := c.Send(ctx, "bench", body, 250*time.Millisecond); err != nil {
			b.Fatal(err)
		}
		n++
	}
	reportRate(b, n)
}

func BenchmarkSendBatch100(b *testing.B) {
	ctx := context.Background()
	c, body := benchClient(b), stepMessageBody(b)
	batch := make([][]byte, 100)
	for i := range batch {
		batch[i] = body
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := c.SendBatch(ctx, "bench", batch, 0); err != nil {
			b.Fatal(err)
		}
		n += len(batch)
	}
	reportRate(b, n)
}

// benchmarkReadDelete measures the consumer cycle: read qty messages, then delete them.
func benchmarkReadDelete(b *testing.B, qty int) {
	ctx := context.Background()
	c, body := benchClient(b), stepMessageBody(b)
	refill := make([][]byte, 1000)
	for i := range refill {
		refill[i] = body
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		msgs, err := c.Read(ctx, "bench", time.Minute, qty)
		if err != nil {
			b.Fatal(err)
		}
		if len(msgs) == 0 {
			// Refilling is not part of the cycle being measured.
			b.StopTimer()
			if _, err := c.SendBatch(ctx, "bench", refill, 0); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			continue
		}
		if qty == 1 {
			if _, err := c.Delete(ctx, "bench", msgs[0].ID); err != nil {
				b.Fatal(err)
			}
		} else {
			ids := make([]int64, len(msgs))
			for i, m := range msgs {
				ids[i] = m.ID
			}
			if _, err := c.DeleteBatch(ctx, "bench", ids); err != nil {
				b.Fatal(err)
			}
		}
		n += len(msgs)
	}
	reportRate(b, n)
}

func BenchmarkReadDelete(b *testing.B)         { benchmarkReadDelete(b, 1) }
func BenchmarkReadDeleteBatch100(b *testing.B) { benchmarkReadDelete(b, 100) }

func BenchmarkTaskRequestEncode(b *testing.B) {
	r := queue.TaskRequest{
		RequestID: uuid.New(), Namespace: "billing", Name: "charge_card", Version: "1.0.0",
		Context:  `{"order_id":12345,"amount":{"value":1999,"currency":"EUR"},"items":[1,2,3]}`,
		Priority: 2, RequestedBy: "bench", CorrelationID: uuid.New(),
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTaskRequestDecode(b *testing.B) {
	data := fmt.Appendf(nil, `{"request_id":%q,"namespace":"billing","name":"charge_card","version":"1.0.0",
		"context":{"order_id":12345,"amount":{"value":1999,"currency":"EUR"},"items":[1,2,3]},
		"priority":2,"requested_by":"bench","correlation_id":%q}`, uuid.New(), uuid.New())
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := queue.DecodeTaskRequest(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStepMessageEncode(b *testing.B) {
	m := queue.StepMessage{TaskUUID: uuid.New(), StepUUID: uuid.New(), CorrelationID: uuid.New()}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStepMessageDecode(b *testing.B) {
	data := stepMessageBody(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := queue.DecodeStepMessage(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStepResultEncode(b *testing.B) {
	r := queue.StepResult{TaskUUID: uuid.New(), StepUUID: uuid.New(), CorrelationID: uuid.New(), Attempt: 2}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStepResultDecode(b *testing.B) {
	data, err := queue.StepResult{TaskUUID: uuid.New(), StepUUID: uuid.New(), CorrelationID: uuid.New(), Attempt: 2}.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := queue.DecodeStepResult(data); err != nil {
			b.Fatal(err)
		}
	}
}
