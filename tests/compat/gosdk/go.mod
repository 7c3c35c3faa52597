module vallum.test/compat/gosdk

go 1.22

require (
	github.com/go-jose/go-jose/v3 v3.0.0
	github.com/pomerium/sdk-go v0.0.9
)

require (
	github.com/hashicorp/golang-lru/v2 v2.0.4 // indirect
	golang.org/x/crypto v0.9.0 // indirect
)
