"""The op library (`ops.space`) and the reference spaces, installed with spacelang as
package data `spacelang.spaces`: a spec anywhere can `import "ops.space"`."""
