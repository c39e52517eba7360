package cli

import (
	"fmt"
	"net"
	"text/tabwriter"

	"github.com/spf13/cobra"

	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
)

func newAgentCmd(e *env) *cobra.Command {
	c := groupCmd("agent", "Register source and target agents with the controller and list them")
	addConnFlags(c)
	c.AddCommand(newAgentAddCmd(e), newAgentListCmd(e))
	return c
}

func newAgentAddCmd(e *env) *cobra.Command {
	var addr, role string
	c := &cobra.Command{
		Use:   "add NAME --address HOST:PORT --role source|target",
		Short: "Register an agent the controller can reach",
		Long: `Registers the agent NAME listening at --address. NAME must be the name in
the agent's certificate (pki issue --name): the controller checks it on every
connection.`,
		Example: `  controller agent add site-a --address site-a.example.net:7401 --role source
  controller agent add vault-b --address 10.1.0.9:7402 --role target`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			a := &controllerv1.Agent{Name: args[0], Address: addr}
			switch role {
			case "source":
				a.Role = controllerv1.AgentRole_AGENT_ROLE_SOURCE
			case "target":
				a.Role = controllerv1.AgentRole_AGENT_ROLE_TARGET
			default:
				return usagef("--role %q: choose source or target", role)
			}
			if host, port, err := net.SplitHostPort(addr); err != nil || host == "" || port == "" {
				return usagef("--address %q: want HOST:PORT, e.g. site-a.example.net:7401", addr)
			}
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := callContext(cmd)
			defer cancel()
			resp, err := client.AddAgent(ctx, &controllerv1.AddAgentRequest{Agent: a})
			if err != nil {
				return err
			}
			if resp.GetAgent() != nil {
				a = resp.GetAgent()
			}
			fmt.Fprintf(e.stdout, "agent %s added: %s at %s\n", a.GetName(), roleWord(a.GetRole()), a.GetAddress())
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&addr, "address", "", "HOST:PORT the controller dials the agent at")
	f.StringVar(&role, "role", "", "source or target")
	c.MarkFlagRequired("address")
	c.MarkFlagRequired("role")
	return c
}

func newAgentListCmd(e *env) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:     "list",
		Short:   "List the registered agents",
		Example: `  controller agent list -o json`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := callContext(cmd)
			defer cancel()
			resp, err := client.ListAgents(ctx, &controllerv1.ListAgentsRequest{})
			if err != nil {
				return err
			}
			agents := []agentView{}
			for _, a := range resp.GetAgents() {
				agents = append(agents, newAgentView(a))
			}
			if output == "json" {
				return writeJSON(e.stdout, map[string]any{"agents": agents})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tADDRESS")
			for _, a := range agents {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Name, orDash(a.Role), a.Address)
			}
			return tw.Flush()
		},
	}
	addOutputFlag(c, &output)
	return c
}
