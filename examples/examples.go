// Package examples ships the five reference workflows as templates, with the
// demo handlers they run on. The tasker command passes them to its node
// (Bundle), which loads them when templates.bundled is set (the default
// outside production), so a fresh node has something to run.
package examples

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"sort"

	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/workflow"
)

//go:embed templates
var templates embed.FS

// Templates returns the bundled template folder (one subfolder per
// namespace).
func Templates() fs.FS {
	sub, err := fs.Sub(templates, "templates")
	if err != nil {
		panic(err) // the folder is embedded at build time
	}
	return sub
}

// Bundle is the demo handlers and their templates, for
// bootstrap.Options.Bundled.
func Bundle() bootstrap.Bundle {
	return bootstrap.Bundle{Register: Register, Templates: Templates()}
}

// Register adds the demo handlers to reg.
func Register(reg *workflow.Registry) error {
	handlers := map[string]workflow.Handler{
		"demo.math":              workflow.HandlerFunc(Math),
		"demo.validate_order":    workflow.HandlerFunc(ValidateOrder),
		"demo.reserve_inventory": workflow.HandlerFunc(ReserveInventory),
		"demo.process_payment":   workflow.HandlerFunc(ProcessPayment),
		"demo.ship_order":        workflow.HandlerFunc(ShipOrder),
	}
	names := make([]string, 0, len(handlers))
	for n := range handlers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := reg.Register(n, handlers[n]); err != nil {
			return err
		}
	}
	return nil
}

// Number is the result shape of demo.math.
type Number struct {
	Result float64 `json:"result"`
}

type mathConfig struct {
	Op      string   `json:"op"`
	Operand *float64 `json:"operand"`
}

// Math is demo.math. A root step reads context.even_number, which must be an
// even integer; a step with one parent applies its op to the parent's
// result; a join applies its op to all parents' results. Ops: square, add,
// multiply, divide (with operand), average and multiply_all.
func Math(_ context.Context, in workflow.StepInput) (json.RawMessage, error) {
	var cfg mathConfig
	if err := json.Unmarshal(in.Config, &cfg); err != nil {
		return nil, workflow.Permanent("bad_config", "step %s: config: %v", in.StepName, err)
	}
	inputs, err := mathInputs(in)
	if err != nil {
		return nil, err
	}
	operand := func() (float64, error) {
		if cfg.Operand == nil {
			return 0, workflow.Permanent("bad_config", "step %s: op %q needs an operand", in.StepName, cfg.Op)
		}
		return *cfg.Operand, nil
	}
	one := func() (float64, error) {
		if len(inputs) != 1 {
			return 0, workflow.Permanent("bad_config", "step %s: op %q takes one input, got %d", in.StepName, cfg.Op, len(inputs))
		}
		return inputs[0], nil
	}
	var out float64
	switch cfg.Op {
	case "square":
		x, err := one()
		if err != nil {
			return nil, err
		}
		out = x * x
	case "add", "multiply", "divide":
		x, err := one()
		if err != nil {
			return nil, err
		}
		y, err := operand()
		if err != nil {
			return nil, err
		}
		switch cfg.Op {
		case "add":
			out = x + y
		case "multiply":
			out = x * y
		default:
			if y == 0 {
				return nil, workflow.Permanent("bad_config", "step %s: divide by zero", in.StepName)
			}
			out = x / y
		}
	case "average":
		sum := 0.0
		for _, x := range inputs {
			sum += x
		}
		out = sum / float64(len(inputs))
	case "multiply_all":
		out = 1
		for _, x := range inputs {
			out *= x
		}
	default:
		return nil, workflow.Permanent("bad_config", "step %s: unknown op %q", in.StepName, cfg.Op)
	}
	return json.Marshal(Number{Result: out})
}

// mathInputs returns the step's inputs: context.even_number for a root, else
// the parents' results in parent-name order (so joins are deterministic).
func mathInputs(in workflow.StepInput) ([]float64, error) {
	if len(in.Parents) == 0 {
		var ctx struct {
			EvenNumber *json.Number `json:"even_number"`
		}
		if err := json.Unmarshal(in.Context, &ctx); err != nil || ctx.EvenNumber == nil {
			return nil, workflow.Permanent("invalid_input", "context.even_number is missing: the task needs an even integer")
		}
		n, err := ctx.EvenNumber.Float64()
		if err != nil || n != math.Trunc(n) || math.Abs(n) > 1<<53 {
			return nil, workflow.Permanent("invalid_input", "context.even_number must be an integer, got %s", ctx.EvenNumber.String())
		}
		if int64(n)%2 != 0 {
			return nil, workflow.Permanent("invalid_input", "context.even_number must be even, got %d", int64(n))
		}
		return []float64{n}, nil
	}
	names := make([]string, 0, len(in.Parents))
	for n := range in.Parents {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]float64, 0, len(names))
	for _, n := range names {
		var r Number
		if err := json.Unmarshal(in.Parents[n], &r); err != nil {
			return nil, workflow.Permanent("invalid_input", "result of parent %s is not a number: %v", n, err)
		}
		out = append(out, r.Result)
	}
	return out, nil
}

// Order is the context of the fulfillment workflow.
type Order struct {
	OrderID  string `json:"order_id"`
	Customer struct {
		ID    string `json:"id"`
		Email string `json:"email"`
	} `json:"customer"`
	Items []struct {
		SKU       string  `json:"sku"`
		Quantity  int     `json:"quantity"`
		UnitPrice float64 `json:"unit_price"`
	} `json:"items"`
	Payment struct {
		Method   string  `json:"method"`
		Token    string  `json:"token"`
		Amount   float64 `json:"amount"`
		Currency string  `json:"currency"`
	} `json:"payment"`
	Shipping struct {
		Method  string            `json:"method"`
		Address map[string]string `json:"address"`
	} `json:"shipping"`
}

func decodeOrder(in workflow.StepInput) (Order, error) {
	var o Order
	if err := json.Unmarshal(in.Context, &o); err != nil {
		return o, workflow.Permanent("invalid_order", "the task context is not an order: %v", err)
	}
	return o, nil
}

// ValidateOrder is demo.validate_order: it checks the order and totals it.
func ValidateOrder(_ context.Context, in workflow.StepInput) (json.RawMessage, error) {
	o, err := decodeOrder(in)
	if err != nil {
		return nil, err
	}
	switch {
	case o.OrderID == "":
		return nil, workflow.Permanent("invalid_order", "order_id is missing")
	case o.Customer.ID == "":
		return nil, workflow.Permanent("invalid_order", "customer.id is missing")
	case len(o.Items) == 0:
		return nil, workflow.Permanent("invalid_order", "the order has no items")
	}
	total := 0.0
	for i, it := range o.Items {
		if it.SKU == "" || it.Quantity <= 0 || it.UnitPrice < 0 {
			return nil, workflow.Permanent("invalid_order", "items[%d] needs a sku, a positive quantity and a price", i)
		}
		total += float64(it.Quantity) * it.UnitPrice
	}
	if math.Abs(total-o.Payment.Amount) > 0.005 {
		return nil, workflow.Permanent("invalid_order", "payment.amount %.2f does not match the items' total %.2f", o.Payment.Amount, total)
	}
	return json.Marshal(map[string]any{"order_id": o.OrderID, "validated": true, "total": total, "item_count": len(o.Items)})
}

// ReserveInventory is demo.reserve_inventory: one reservation per item.
func ReserveInventory(_ context.Context, in workflow.StepInput) (json.RawMessage, error) {
	o, err := decodeOrder(in)
	if err != nil {
		return nil, err
	}
	reservations := make([]map[string]any, 0, len(o.Items))
	for _, it := range o.Items {
		reservations = append(reservations, map[string]any{"sku": it.SKU, "quantity": it.Quantity, "reservation_id": fmt.Sprintf("res_%s_%s", o.OrderID, it.SKU)})
	}
	return json.Marshal(map[string]any{"order_id": o.OrderID, "reserved": true, "reservations": reservations})
}

// ProcessPayment is demo.process_payment: charges the validated total.
func ProcessPayment(_ context.Context, in workflow.StepInput) (json.RawMessage, error) {
	o, err := decodeOrder(in)
	if err != nil {
		return nil, err
	}
	var validated struct {
		Total float64 `json:"total"`
	}
	if err := json.Unmarshal(in.Parents["validate_order"], &validated); err != nil {
		return nil, workflow.Permanent("invalid_input", "validate_order result: %v", err)
	}
	var reserved struct {
		Reserved bool `json:"reserved"`
	}
	if err := json.Unmarshal(in.Parents["reserve_inventory"], &reserved); err != nil || !reserved.Reserved {
		return nil, workflow.Permanent("invalid_input", "inventory was not reserved")
	}
	return json.Marshal(map[string]any{"order_id": o.OrderID, "charged": validated.Total, "currency": o.Payment.Currency, "payment_id": "pay_" + o.OrderID, "status": "captured"})
}

// ShipOrder is demo.ship_order: books the shipment of a paid order.
func ShipOrder(_ context.Context, in workflow.StepInput) (json.RawMessage, error) {
	o, err := decodeOrder(in)
	if err != nil {
		return nil, err
	}
	var paid struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(in.Parents["process_payment"], &paid); err != nil || paid.Status != "captured" {
		return nil, workflow.Permanent("invalid_input", "the payment was not captured")
	}
	method := o.Shipping.Method
	if method == "" {
		method = "standard"
	}
	return json.Marshal(map[string]any{"order_id": o.OrderID, "shipped": true, "method": method, "tracking_number": "TRK-" + o.OrderID})
}

// SampleOrder is a valid context for the fulfillment workflow.
const SampleOrder = `{"order_id":"ord_1001","customer":{"id":"cus_42","email":"ada@example.com"},` +
	`"items":[{"sku":"BOOK-001","quantity":2,"unit_price":12.5}],` +
	`"payment":{"method":"card","token":"tok_visa","amount":25,"currency":"EUR"},` +
	`"shipping":{"method":"standard","address":{"line1":"1 Main St","city":"Lyon","postal_code":"69001","country":"FR"}}}`
