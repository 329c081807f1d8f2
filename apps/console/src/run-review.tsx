import type { Run, RunReviewVerdict } from "@l1fe/shells";
import { RunReviewCreate } from "@shells/contract";
import { useEffect, useState, type FormEvent } from "react";
import { Issues, issuesOf } from "./form-dialog.js";
import { canControl, type Session } from "./session.js";
import { Button, ErrorNote, Field, fieldClass, when } from "./ui.js";

const VERDICTS: RunReviewVerdict[] = ["approved", "changes_requested", "rejected"];

/**
 * A finished run's review: its latest verdict, and for the org's listed approvers a form to give
 * one (the server refuses a reviewer who is behind the run, and says why).
 */
export function RunReviewPanel({
  session,
  run,
  onReviewed,
}: {
  session: Session;
  run: Run;
  onReviewed: () => void;
}) {
  const { client, principal } = session;
  const [approver, setApprover] = useState(false);
  const [verdict, setVerdict] = useState<RunReviewVerdict>("approved");
  const [comment, setComment] = useState("");
  const [issues, setIssues] = useState<string[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (principal.actor.type !== "user" || !canControl(principal)) return;
    client.policy.get().then(
      (policy) => setApprover(policy.approvers.includes(principal.actor.id)),
      () => setApprover(false),
    );
  }, [client, principal]);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    const parsed = RunReviewCreate.safeParse({ verdict, comment });
    setIssues(parsed.success ? [] : issuesOf(parsed.error));
    if (!parsed.success) return;
    setBusy(true);
    try {
      await client.runs.review(run.id, parsed.data);
      setComment("");
      onReviewed();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div aria-label="Run review" className="space-y-2">
      <h3 className="text-sm font-semibold">Review</h3>
      {run.review ? (
        <p className="text-sm" data-testid="run-review">
          <span className="font-mono">{run.review.verdict}</span> by{" "}
          <span className="font-mono">{run.review.reviewedBy}</span> on {when(run.review.createdAt)}
          : {run.review.comment}
        </p>
      ) : (
        <p className="text-sm text-zinc-500 dark:text-zinc-400">Not reviewed.</p>
      )}
      {approver && (
        <form
          aria-label="Review this run"
          onSubmit={(event) => void submit(event)}
          className="flex flex-wrap items-end gap-3"
        >
          <Field label="Verdict">
            <select
              aria-label="Verdict"
              value={verdict}
              onChange={(event) => setVerdict(event.target.value as RunReviewVerdict)}
              className={fieldClass}
            >
              {VERDICTS.map((option) => (
                <option key={option}>{option}</option>
              ))}
            </select>
          </Field>
          <Field label="Comment" wide>
            <input
              aria-label="Review comment"
              value={comment}
              onChange={(event) => setComment(event.target.value)}
              className={fieldClass}
            />
          </Field>
          <Button type="submit" variant="primary" disabled={busy || !comment.trim()}>
            Submit review
          </Button>
        </form>
      )}
      <Issues issues={issues} />
      <ErrorNote error={error} />
    </div>
  );
}
