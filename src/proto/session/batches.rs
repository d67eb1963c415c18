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
        if batch.next == batch.commands.len() {
            self.batches.remove(&id);
            return Ok(BatchStep::Item(None));
        }
        // Refill once half the window has been answered, so writes stay few and large.
        if batch.sent < batch.commands.len() && batch.in_flight.len() < window / 2 + 1 {
            let end = batch
                .commands
                .len()
                .min(batch.sent + window - batch.in_flight.len());
            let commands: Vec<Command> = batch.commands[batch.sent..end].to_vec();
            let collect = batch.collect;
            batch.sent = end;
            for command in commands {
                let expect = collect.expect(&command);
                let verb = Verb::of(&command, false);
                let entry = self.send(&command, expect, Owner::Batch(id), verb)?;
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
