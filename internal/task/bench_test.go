package task

import (
	"testing"
	"time"
)

func benchEnvelope() *Envelope {
	return &Envelope{ID: "1vQq7h3wN2cL8pXgT0aZ4e", NodeID: "resize-7", NodeType: "resize", CorrelationID: "run-42",
		Payload: make([]byte, 256), Params: Params{"width": 256, "mode": "fit"}, CreatedAt: time.UnixMilli(1767225600000)}
}

func BenchmarkEncodeMsgpack(b *testing.B) {
	env := benchEnvelope()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeMsgpack(env); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeMsgpack(b *testing.B) {
	data, _ := EncodeMsgpack(benchEnvelope())
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := DecodeMsgpack(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeJSON(b *testing.B) {
	data, _ := EncodeJSON(benchEnvelope())
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := DecodeJSON(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckMsgpack is the walk DecodeMsgpack makes before decoding.
func BenchmarkCheckMsgpack(b *testing.B) {
	data, _ := EncodeMsgpack(benchEnvelope())
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := CheckMsgpack(data); err != nil {
			b.Fatal(err)
		}
	}
}
