package routing_test

import (
	"bytes"
	"fmt"

	"github.com/meridian-id/meridian/routing"
)

func ExampleCodec() {
	key := bytes.Repeat([]byte{7}, 32) // load the federation routing key from a file in production
	codec, _ := routing.NewCodec([]string{"eu", "us", "ap"}, key)

	token, _ := codec.New(routing.KindAccess, "eu")
	tag, err := codec.Verify(token)
	fmt.Println(tag.Kind, tag.Region, err)
	// Output: at eu <nil>
}
