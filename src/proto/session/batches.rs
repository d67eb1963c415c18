//! Pipelined batches: a window of commands in flight, replies handed out in order.

use super::*;

impl Session {
    /// One step of a batch: send more of it, hand out its next reply, or wait.
    pub(super) fn batch_step(&mut self, id: u64) -> Result<BatchStep, ProtoError> {
        let window = if self.capabilities().is_some_and(|c| c.pipelining) {
            WINDOW
        } else {
            1
        };
        let batch = self.batches.get_mut(&id).expect("batch exists");
        if batch.next == batch.lines.len() {
            self.batches.remove(&id);
            return Ok(BatchStep::Item(None));
        }
        // Refill once half the window has been answered, so writes stay few and large.
        if batch.sent < batch.lines.len() && batch.in_flight.len() < window / 2 + 1 {
            let end = batch
                .lines
                .len()
                .min(batch.sent + window - batch.in_flight.len());
            let lines: Vec<Vec<u8>> = batch.lines[batch.sent..end].to_vec();
            let expect = batch.expect;
            batch.sent = end;
            for line in lines {
                let entry = self.send(&line, expect, Owner::Batch(id), classify(&line))?;
                self.batches
                    .get_mut(&id)
                    .expect("batch exists")
                    .in_flight
                    .push_back(entry);
            }
            return Ok(BatchStep::Sent);
        }
        let next_entry = *batch.in_flight.front().expect("a batch reply is in flight");
        let Some(outcome) = self.reply_for(next_entry)? else {
            return Ok(BatchStep::Wait);
        };
        let batch = self.batches.get_mut(&id).expect("batch exists");
        batch.in_flight.pop_front();
        let index = batch.next;
        batch.next += 1;
        Ok(BatchStep::Item(Some((index, outcome))))
    }
}
